#!/usr/bin/python
# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy_smoke
short_description: Provoke one contained memcg OOM and check that the running policy picks the expected victim
version_added: 0.1.0
description:
  - In a cgroup of its own with O(limit_mib) of memory and no swap, starts
    one small process per entry of O(processes), in order, each holding its memory before the next starts. The
    last one pushes the cgroup over its limit, so the kernel runs a memcg OOM and the attached policy chooses.
  - The cgroup is C(/bpfoom.slice/bpfoom-smoke.slice/bpfoom-smoke-PID.scope/smoke), in a transient scope systemd delegates to
    the module (C(systemd-run --scope -p Delegate=yes)), since the cgroup tree is systemd's; a slice of its own
    keeps the processes out of C(system.slice), which a policy may avoid. Without systemd, C(/bpfoom-smoke-PID).
  - Reports which process the kernel killed first and the C(policy_name=) of the kernel's OOM report, and fails
    when they differ from O(expect_victim) or O(expect_policy_name).
  - The trigger runs at nice 19, so that on a small host the victim's exit is not overtaken by the trigger.
    Where it still is (the victim's memory is freed only after the kernel has marked it done), a second OOM
    kills a second process; the module warns about it and judges the first, the policy's choice among all.
  - Never signals a process outside its cgroup, kills its own processes and removes the cgroup on every path,
    and gives up after O(timeout) seconds. Reads the kernel log from where it stood at the start; it never
    clears it.
  - The processes are Python (the host's interpreter), so hosts need no compiler. Each costs a few MiB of its
    own on top of its O(processes[].mib); leave room for that in O(limit_mib).
author:
  - bpfoom.fleet maintainers (@bpfoom)
options:
  processes:
    description:
      - The processes, in start order; the last one is the trigger. Two at least.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The process name (its comm, at most 15 characters), as the policy matches it.
        type: str
        required: true
      mib:
        description: MiB the process holds (every page written, so all of it is charged).
        type: int
        required: true
      cgroup:
        description:
          - Run the process in a child cgroup of that name (for example V(batch.slice)) inside the transient
            cgroup, for policies that match the cgroup's name.
        type: str
  limit_mib:
    description: memory.max of the transient cgroup, in MiB. Every process but the last must fit under it.
    type: int
    required: true
  expect_victim:
    description: Name of the process the policy should make the kernel kill.
    type: str
  expect_policy_name:
    description: The policy name the kernel's OOM report should carry.
    type: str
  timeout:
    description: Seconds to wait for the kernel to kill a process, once the trigger started.
    type: int
    default: 60
attributes:
  check_mode:
    description: Does nothing in check mode (it would provoke an OOM); says so.
    support: full
  diff_mode:
    description: Changes nothing on the host, so there is nothing to show.
    support: none
  platform:
    description: Linux with cgroup v2 (the unified hierarchy) and /dev/kmsg; needs root.
    support: full
    platforms: posix
notes:
  - The kernel's OOM report of the smoke test lands in the host's kernel log, with the transient cgroup's name.
seealso:
  - module: bpfoom.fleet.policy
  - module: bpfoom.fleet.policy_info
"""

EXAMPLES = r"""
- name: The web policy must sacrifice the report generator, not the web server
  bpfoom.fleet.policy_smoke:
    limit_mib: 128
    processes:
      - {name: web-server, mib: 64}
      - {name: report-gen, mib: 16, cgroup: batch.slice}
      - {name: trigger, mib: 40}
    expect_victim: report-gen
    expect_policy_name: web
"""

RETURN = r"""
ran:
  description: Whether the smoke test ran (false in check mode, where it provokes nothing).
  returned: always
  type: bool
  sample: true
victim:
  description: Name of the process the first OOM killed (null if none was killed).
  returned: unless in check mode
  type: str
  sample: report-gen
killed:
  description: Every smoke process the kernel killed, sorted.
  returned: unless in check mode
  type: list
  elements: str
  sample: [report-gen]
policy_name:
  description: The C(policy_name=) of the kernel's OOM report about the transient cgroup (null if none).
  returned: unless in check mode
  type: str
  sample: web
as_expected:
  description: Whether the victim and the policy name are the expected ones (true when nothing was expected).
  returned: unless in check mode
  type: bool
report:
  description: The first OOM report's C(invoked oom-killer) line and its C(Killed process) line.
  returned: unless in check mode
  type: list
  elements: str
timed_out:
  description: True when no process was killed within O(timeout).
  returned: unless in check mode
  type: bool
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bpfoom.fleet.plugins.module_utils import oom_smoke

CGROUP_NAME = re.compile(r"^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,127}$")


def check_processes(module, processes):
    names = [process["name"] for process in processes]
    if len(processes) < 2:
        module.fail_json(msg="processes: give two at least (the last one triggers the OOM)")
    if len(set(names)) != len(names):
        module.fail_json(msg=f"processes: names must be unique, got {names}")
    for process in processes:
        if not 0 < len(process["name"]) <= 15 or "/" in process["name"]:
            module.fail_json(msg=f"processes: name {process['name']!r} must be 1 to 15 characters, no '/'")
        if process["mib"] <= 0:
            module.fail_json(msg=f"processes: mib of {process['name']} must be positive")
        if process.get("cgroup") and not CGROUP_NAME.match(process["cgroup"]):
            module.fail_json(msg=f"processes: cgroup {process['cgroup']!r} of {process['name']} must be one "
                                 "plain cgroup name such as batch.slice")
    expected = module.params["expect_victim"]
    if expected is not None and expected not in names:
        module.fail_json(msg=f"expect_victim: {expected!r} is none of the processes {names}")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            processes=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True), mib=dict(type="int", required=True),
                cgroup=dict(type="str"))),
            limit_mib=dict(type="int", required=True),
            expect_victim=dict(type="str"),
            expect_policy_name=dict(type="str"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    processes = module.params["processes"]
    check_processes(module, processes)
    if module.check_mode:
        # Not "skipped": ansible-core 2.22 deprecates modules that say so; the task ran, the test did not.
        module.exit_json(changed=False, ran=False, msg="check mode: the smoke test provokes an OOM, so it did not run")
    try:
        outcome = oom_smoke.run([(p["name"], p["mib"], p.get("cgroup")) for p in processes],
                                module.params["limit_mib"], module.params["timeout"])
    except (OSError, RuntimeError) as error:
        module.fail_json(msg=f"the smoke test could not run: {error}")
    victim = outcome["victim"]
    policy_name = outcome["policy_names"][0] if outcome["policy_names"] else None
    expected_victim, expected_name = module.params["expect_victim"], module.params["expect_policy_name"]
    problems = []
    if not outcome["reports"] and not outcome["killed"]:
        problems.append(f"no OOM happened within {module.params['timeout']} s: the processes fit under "
                        f"{module.params['limit_mib']} MiB, or the policy killed nothing (no_victim={outcome['no_victim']})")
    if len(outcome["killed"]) > 1:
        module.warn(f"a second OOM followed the first and killed {sorted(set(outcome['killed']) - {victim})} too: "
                    f"the trigger retried before {victim}'s memory was freed, or the processes left after the "
                    f"first kill do not fit under {module.params['limit_mib']} MiB")
    if expected_victim is not None and victim != expected_victim:
        problems.append(f"the kernel killed {victim or 'nothing'}, the policy should have picked {expected_victim}")
    if expected_name is not None and policy_name != expected_name:
        problems.append(f"the OOM report says policy_name={policy_name}, expected {expected_name}")
    result = dict(changed=False, ran=True, victim=victim, killed=outcome["killed"], policy_name=policy_name,
                  as_expected=not problems, report=outcome["reports"][:1] + outcome["kill_lines"][:1],
                  timed_out=outcome["timed_out"], cgroup=outcome["cgroup"])
    if problems:
        module.fail_json(msg="smoke test failed: " + "; ".join(problems), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

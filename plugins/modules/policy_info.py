#!/usr/bin/python
# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy_info
short_description: Tell what a host can run and runs, from the kernel's own objects
version_added: 0.1.0
description:
  - Reports the kernel release, whether its BTF has the BPF OOM hook (C(bpf_oom_evaluate_task)), the name hook
    (C(bpf_set_policy_name)) and the kfunc (C(set_oom_policy_name)), whether bpffs is mounted, the libbpf version,
    the agent's state, and the attached policies as C(bpfoomctl status) reads them from the kernel (links,
    attach types, target functions, program tags, policy names and hashes, counters).
  - With O(explain), also which process the desired policy would kill in a global OOM now, and which one the
    kernel would kill without it (C(bpfoomctl explain), the policy's own rule, run over the live tasks in the
    kernel; no OOM, nothing attached by it).
  - Works before the agent is installed (then without the policies), so a rollout can check hosts first.
  - Changes nothing.
author:
  - bpfoom.fleet maintainers (@bpfoom)
options:
  explain:
    description:
      - Run C(bpfoomctl explain) for the desired policy (about half a second on a small host).
    type: bool
    default: true
attributes:
  check_mode:
    description: Runs normally in check mode; it only reads.
    support: full
  diff_mode:
    description: Nothing to show.
    support: none
  platform:
    description: Linux hosts.
    support: full
    platforms: posix
seealso:
  - module: bpfoom.fleet.policy
"""

EXAMPLES = r"""
- name: Read what the host runs
  bpfoom.fleet.policy_info:
  register: oom

- name: Say which hosts lack the hook
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} runs {{ oom.kernel_release }} without the BPF OOM hook"
  when: not oom.hook
"""

RETURN = r"""
kernel_release:
  description: The running kernel's release.
  returned: always
  type: str
  sample: 6.12.117-bpfoom
hook:
  description: Whether the kernel has all three hook functions.
  returned: always
  type: bool
  sample: true
hook_functions:
  description: Each hook function and whether the kernel's BTF has it.
  returned: always
  type: dict
  sample: {"bpf_oom_evaluate_task": true, "bpf_set_policy_name": true, "set_oom_policy_name": true}
bpffs:
  description: Whether bpffs is mounted on /sys/fs/bpf.
  returned: always
  type: bool
  sample: true
libbpf_version:
  description: Version of libbpf.so.1 on the host, null if missing.
  returned: always
  type: str
  sample: "1.1"
agent_installed:
  description: Whether bpfoomctl is installed.
  returned: always
  type: bool
  sample: true
agent_state:
  description: State of bpfoom.service (C(systemctl is-active)), null if systemctl is missing.
  returned: always
  type: str
  sample: active
attached_policy:
  description: Name, hash and mode (V(enforce) or V(shadow)) of the policy the agent keeps attached, null if none.
  returned: always
  type: dict
  sample: {"policy_name": "web", "policy_hash": "905973c7...", "mode": "enforce"}
explain:
  description:
    - What the desired policy would do in a global OOM now, null without a desired policy or with O(explain=false).
    - C(would_kill) and C(kernel_would_kill) (pid, comm, cgroup, rank, the kernel's C(oom_score)), C(agrees),
      C(candidates) (the first ten in the policy's order), C(tasks) (how many it ranked).
  returned: always
  type: dict
  sample: {"would_kill": {"pid": 812, "comm": "report-gen", "cgroup": "/batch.slice/report.service", "rank": 2,
           "oom_score": 701}, "kernel_would_kill": {"pid": 640, "comm": "web-server", "rank": 1, "oom_score": 912},
           "agrees": false, "tasks": 41}
explain_error:
  description: Why C(explain) is null although a policy is desired (for example a policy built before explain).
  returned: always
  type: str
policies:
  description: Every policy attached to the hook, the agent's and any other, as the kernel describes them.
  returned: always
  type: list
  elements: dict
desired_hash:
  description: Hash of the policy the agent re-applies at boot, null if none.
  returned: always
  type: str
  sample: 905973c706e5b2a1f0f4c1e6a7d1b3e9c0d2f4a6b8c0e2f4a6b8c0d2e4f6a8b0
desired_mode:
  description: The mode the agent re-applies that policy in at boot (V(enforce) or V(shadow)), null if none.
  returned: always
  type: str
  sample: enforce
rollback_target:
  description:
    - The policy M(bpfoom.fleet.policy) with O(bpfoom.fleet.policy#module:rollback_from) would go back to
      (the newest that verified here before the desired one), null if none.
  returned: always
  type: dict
  sample: {"policy_name": "web_v1", "policy_hash": "5eb9382d..."}
input_problems:
  description:
    - What the running policy names that does not resolve on this host now, as its maps hold it (the agent keeps them
      current). For example a select_pid target that is not running (the policy selects nobody), or a unit or slice
      name that no unit of this host has. Empty when everything resolves.
  returned: always
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import (
    C_LOCALE, COMMAND, UNIT, host_facts, policy_identity, run_bpfoomctl)


def main():
    module = AnsibleModule(argument_spec={"explain": dict(type="bool", default=True)}, supports_check_mode=True)
    result = dict(host_facts(), changed=False, agent_installed=os.path.exists(COMMAND), agent_state=None,
                  attached_policy=None, policies=[], desired_hash=None, desired_mode=None, rollback_target=None,
                  input_problems=[],
                  explain=None, explain_error=None)
    systemctl = module.get_bin_path("systemctl")
    if systemctl:
        _rc, out, _err = module.run_command([systemctl, "is-active", UNIT])
        result["agent_state"] = out.strip() or None
    if result["agent_installed"] and result["libbpf_version"]:
        status = run_bpfoomctl(module, "status")
        result.update(hook=status["hook"], hook_functions=status["hook_functions"],
                      attached_policy=policy_identity(status), policies=status["policies"],
                      desired_hash=status["desired_hash"], desired_mode=status.get("desired_mode"),
                      rollback_target=status["rollback_target"], input_problems=status.get("input_problems", []))
        if module.params["explain"] and status["desired_hash"]:
            # Not run_bpfoomctl: a policy that cannot be explained is a fact to report, not a failed read.
            rc, out, err = module.run_command([COMMAND, "explain"], environ_update=C_LOCALE)
            try:
                answer = json.loads(out)
            except ValueError:
                answer = {"failed": True, "msg": err.strip() or f"rc={rc}"}
            if answer.get("failed"):
                result["explain_error"] = answer.get("msg")
            else:
                result["explain"] = {key: answer[key] for key in (
                    "would_kill", "kernel_would_kill", "agrees", "candidates", "tasks", "oom")}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy
short_description: Make a host run a BPF OOM policy, agent included, in one execution; verified from the kernel
version_added: 0.1.0
description:
  - Converges the host in one remote execution. It takes the policy built by M(bpfoom.fleet.policy_build) and the
    agent's files (sent by the action plugin, inside the module's arguments), then
    compares checksums with what the host has and writes only what differs (atomically, root-owned), reloads
    systemd only when the unit changed, enables and starts C(bpfoom.service) only when it is not, mounts bpffs
    when missing, has the agent attach the policy (make-before-break), and reads the kernel back in a separate
    C(bpfoomctl status).
  - Returns the kernel's view (hook, kernel release, attached policy name and hash, links, counters) and which
    files changed. Fails when the kernel's view differs from the wanted policy.
  - Reports a change only when something on the host changes; the same policy already attached and the same
    agent files mean no change and no reload.
  - A new policy is attached before the old one is detached; if the new one fails (verifier rejection, failed
    verification) the old one stays attached.
  - A host without libbpf1 is told by the same execution (C(libbpf_missing)), which then changes nothing.
author:
  - bpfoom.fleet maintainers (@bpfoom)
options:
  arguments_from:
    description:
      - The name of a variable holding every host's arguments, as P(bpfoom.fleet.rollout_stage#filter) returns them
        (C(apply_args), and each host's index in C(apply_of)); the task's own arguments are merged over this host's.
      - The action plugin reads the variable as it is, untemplated, so a host costs the same whatever the size of
        the fleet (the rollout playbook's apply).
    type: str
    version_added: 0.2.0
  build:
    description:
      - The registered result of M(bpfoom.fleet.policy_build) (its C(manifest) and C(object)).
      - In check mode, when the build wrote nothing, its C(manifest) is enough to predict.
      - Required with O(state=present) unless O(rollback_from) is given.
    type: dict
  proven_policies:
    description:
      - The policies a workflow's canary proved (policy hash to name, its artifact C(bpfoom_proven_policies)). When
        given, a O(build) whose hash is not among them fails the task before the host is touched (the action
        plugin decides it), because the policy map, the group_vars or the collection changed since the canary ran.
    type: dict
  rollback_from:
    description:
      - Roll back from this policy (its hash, as M(bpfoom.fleet.policy_build) or M(bpfoom.fleet.policy_info)
        report it). A host that runs it goes back to the newest policy that verified on it before (the agent's
        last-known-good list); a host that does not run it is left as it is.
      - So a second run changes nothing. Fails, changing nothing, when a host that runs it has no earlier policy.
    type: str
  state:
    description:
      - V(present) makes the host run the policy; V(absent) detaches every bpfoom policy (the kernel's own
        choice again) and forgets it, so a reboot does not bring it back. V(absent) leaves the agent installed.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - V(enforce) makes the policy pick the OOM victim and name itself in the kernel's OOM report (kernels with
        the hook). V(shadow) makes it decide nothing and name nothing; per real OOM the agent records the task it
        would have picked beside the one the kernel picked (journal, metrics); any kernel with BTF.
      - The same policy in the other mode is a change, made before the old one is broken.
    type: str
    choices: [enforce, shadow]
    default: enforce
  unpatched:
    description:
      - What to do on a host whose kernel lacks the hook when O(mode=enforce). V(fail) fails the task naming the
        missing functions; V(skip) returns C(hook=false) and changes nothing (the rollout playbook then reports
        the host as skipped); V(shadow) runs the policy there in shadow mode.
    type: str
    choices: [fail, skip, shadow]
    default: fail
  install_libbpf:
    description:
      - On a host that lacks libbpf.so.1, install it with the host's package manager and apply again, in the same
        task (the action plugin does it; not in check mode). Without it such a host fails the task, changing nothing.
    type: bool
    default: false
  libbpf_packages:
    description:
      - The packages O(install_libbpf) installs. Default the returned C(libbpf_packages), named by the host's package
        manager, V(libbpf1) with apt (Debian, Ubuntu) and V(libbpf) with every other (dnf, yum, zypper).
    type: list
    elements: str
  smoke:
    description:
      - After the apply, when the policy runs enforcing, run this smoke test on the host in the same task, a
        canary's proof. Its keys are options of M(bpfoom.fleet.policy_smoke) (O(bpfoom.fleet.policy_smoke#module:processes),
        O(bpfoom.fleet.policy_smoke#module:limit_mib), O(bpfoom.fleet.policy_smoke#module:expect_victim),
        O(bpfoom.fleet.policy_smoke#module:timeout)); the expected policy name is the build's.
      - Its result is C(smoke); a failed smoke test fails the task. Not in check mode.
    type: dict
  manifest:
    description:
      - Internal, set by the action plugin; the built policy's manifest.
    type: dict
  policy_object:
    description:
      - Internal, set by the action plugin; the compiled object, base64-encoded (missing in check mode before a build).
    type: str
extends_documentation_fragment:
  - bpfoom.fleet.agent
attributes:
  action:
    description: An action plugin adds the agent's files and the built object to the module's arguments.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  become:
    description: Needs root on the host (C(become=true) for a login as a normal user with sudo).
    support: full
  check_mode:
    description: Reads the host and the kernel and predicts every step (files, unit, service, bpffs, policy); writes nothing.
    support: full
  diff_mode:
    description: Shows the policy name and hash, and the checksum of each agent file that changes, before and after.
    support: full
  platform:
    description: Linux hosts with systemd; the kernel carries the BPF OOM hook (enforce) or has BTF (shadow).
    support: full
    platforms: posix
notes:
  - On a kernel without the hook an enforcing policy cannot run. Then nothing is written and the task fails
    with O(unpatched=fail), reports C(hook=false) with O(unpatched=skip), or runs the policy in shadow mode
    with O(unpatched=shadow).
seealso:
  - module: bpfoom.fleet.policy_build
  - module: bpfoom.fleet.policy_info
  - module: bpfoom.fleet.agent
"""

EXAMPLES = r"""
- name: Build the policy on the controller
  bpfoom.fleet.policy_build:
    policy:
      name: web
      template: prefer_avoid
      params:
        avoid:
          cgroup: [sshd.service]
  register: built

- name: Make the host run it (agent included)
  bpfoom.fleet.policy:
    build: "{{ built }}"
  become: true

- name: Back from that policy to the one that ran before it (a second run changes nothing)
  bpfoom.fleet.policy:
    rollback_from: "{{ built.policy_hash }}"
  become: true

- name: Back to the kernel's own OOM choice
  bpfoom.fleet.policy:
    state: absent
  become: true
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
policy_name:
  description: Name of the policy the kernel reports as attached after the task (in check mode, the one it would).
  returned: always
  type: str
  sample: web
policy_hash:
  description: Hash of that policy, read back from the object in the kernel.
  returned: always
  type: str
  sample: 905973c706e5b2a1f0f4c1e6a7d1b3e9c0d2f4a6b8c0e2f4a6b8c0d2e4f6a8b0
mode:
  description: The mode the policy runs in, V(enforce) or V(shadow) (null if none runs).
  returned: always
  type: str
  sample: enforce
previous:
  description: Name, hash and mode of the policy attached before the task (null if none).
  returned: always
  type: dict
  sample: {"policy_name": "web_v1", "policy_hash": "5eb9382d...", "mode": "enforce"}
links:
  description: The kernel's links of the attached policy (attach type, target function, program tag).
  returned: always
  type: list
  elements: dict
evaluations:
  description: Candidates the attached policy has ranked since it was attached (null if none is attached).
  returned: always
  type: int
  sample: 4210
selections:
  description: Times the attached policy selected a candidate (null if none is attached).
  returned: always
  type: int
  sample: 37
files_changed:
  description: The agent's files this task wrote (or would write, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/usr/local/lib/bpfoom/bpfoomctl/cli.py]
files_removed:
  description: What an older agent installed that this one does not have, removed by this task (or that would be).
  returned: always
  type: list
  elements: str
  sample: [/usr/local/lib/bpfoom/bpfoomctl.py]
agent_failure:
  description:
    - When the task failed because the agent refused, what it refused for, one name per exit code of bpfoomctl
      (V(no_hook), V(no_shadow_points), V(no_btf), V(verifier), V(mismatch), V(unsafe_path), V(no_bpffs_or_libbpf),
      V(state_not_writable), V(failed)).
  returned: failure
  type: str
  sample: no_shadow_points
agent:
  description: What the task did to the agent's service and bpffs (unit reloaded, enabled, started, restarted, bpffs mounted).
  returned: always
  type: dict
  sample: {"unit_changed": false, "enable": false, "start": false, "restart": false, "mount_bpffs": false}
libbpf_missing:
  description: True when the host lacks libbpf.so.1; the task then fails, changing nothing.
  returned: always
  type: bool
  sample: false
libbpf_installed:
  description: The packages the task installed because libbpf.so.1 was missing (O(install_libbpf)).
  returned: when installed
  type: list
  elements: str
  sample: [libbpf1]
smoke:
  description: The result of the smoke test (O(smoke)), as M(bpfoom.fleet.policy_smoke) returns it.
  returned: when O(smoke) was given and the policy runs enforcing
  type: dict
  sample: {"victim": "report-gen", "policy_name": "web"}
failed_step:
  description: The step a failed task stopped at (the install of libbpf, the apply again, the smoke test).
  returned: failure, after the first apply
  type: str
  sample: Provoke a contained memcg OOM and check the victim
unreachable_during:
  description: The step during which the host stopped answering; the task then fails (it is not left unreachable).
  returned: when the host stopped answering
  type: str
  sample: Apply the policy (agent, bpffs, make-before-break; verified from the kernel)
package_manager:
  description: The host's package manager (for C(ansible.builtin.package)'s C(use)), null if none is known.
  returned: always
  type: str
  sample: apt
libbpf_packages:
  description: The packages that install libbpf.so.1 with that package manager (V(libbpf1) with apt, V(libbpf) otherwise).
  returned: always
  type: list
  elements: str
  sample: [libbpf1]
notes:
  description: What the agent noted (for select_pid, the target process it resolved; the unit aliases it resolved).
  returned: always
  type: list
  elements: str
input_problems:
  description:
    - What the policy names that does not resolve on this host, as the kernel's maps hold it after the task (also a
      warning of the task). For example a select_pid target that is not running (the policy selects nobody), or a unit
      or slice name that no unit of this host has.
  returned: always
  type: list
  elements: str
  sample: ["ngnix.service: no such unit on this host, so the policy matches nothing by this name"]
"""

import base64
import json
import os
import shutil

from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import (
    AGENT_SPEC, AgentHost, PayloadModule, agent_installed, decode_files, host_facts, libbpf_missing_message,
    missing_hook_message, libbpf_packages, package_manager, policy_identity, run_bpfoomctl, text_diffs)
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl.contract import INCOMING_DIR, STATE_DIR
from ansible_collections.bpfoom.fleet.plugins.module_utils.host_mode import UNPATCHED_CHOICES, mode_on_host

ARGUMENT_SPEC = dict(
    AGENT_SPEC,
    arguments_from=dict(type="str"),
    build=dict(type="dict"),
    proven_policies=dict(type="dict"),
    install_libbpf=dict(type="bool", default=False),
    libbpf_packages=dict(type="list", elements="str"),
    smoke=dict(type="dict"),
    rollback_from=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    mode=dict(type="str", choices=["enforce", "shadow"], default="enforce"),
    unpatched=dict(type="str", choices=list(UNPATCHED_CHOICES), default="fail"),
    manifest=dict(type="dict"),
    policy_object=dict(type="str"),
)


def describe(identity, files=None):
    """One side of the diff: the policy, then each agent file that changes with its checksum."""
    text = "none (the kernel's own choice)\n" if identity is None else \
        f"policy_name: {identity['policy_name']}\npolicy_hash: {identity['policy_hash']}\nmode: {identity['mode']}\n"
    return text + "".join(f"file {path}: {digest or 'absent'}\n" for path, digest in (files or {}).items())


def wanted_identity(module, params, status, result, mode):
    """The policy the host should run after the task, or None for the kernel's own choice."""
    if params["state"] == "absent":
        return None
    if params["rollback_from"]:
        current = policy_identity(status)
        running = {(current or {}).get("policy_hash"), (status or {}).get("desired_hash")}
        if params["rollback_from"] not in running:
            return current                  # not on the policy to leave: nothing to do
        if not status.get("rollback_target"):
            module.fail_json(msg=f"this host runs {params['rollback_from'][:12]} and has no earlier policy that verified "
                                 "on it: nothing to roll back to (state=absent gives the kernel's own choice)", **result)
        return status["rollback_target"]
    return {"policy_name": params["manifest"]["name"], "policy_hash": params["manifest"]["hash"], "mode": mode}


def needs_change(params, status, before, wanted):
    """Whether the agent must act: what the kernel runs, or what the agent re-applies at boot, is not wanted."""
    desired = (status or {}).get("desired_hash"), (status or {}).get("desired_mode")
    if params["state"] == "absent":
        return desired[0] is not None or any(p["managed"] for p in (status or {}).get("policies", []))
    if params["rollback_from"] and wanted == before:
        return False                        # not on the policy to leave
    # A damaged stored copy of the wanted policy is a change too: the apply stores it again, or boot would refuse it.
    wanted_key = (wanted["policy_hash"], wanted["mode"])
    return ((before or {}).get("policy_hash"), (before or {}).get("mode")) != wanted_key or desired != wanted_key \
        or bool((status or {}).get("desired_problem"))


def stage_policy(module, manifest, encoded_object):
    """Write the built policy where bpfoomctl apply reads it: root-only, under the agent's state directory."""
    directory = os.path.join(INCOMING_DIR, manifest["hash"])
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o700)
    os.chmod(INCOMING_DIR, 0o700)
    for name, content in (("policy.bpf.o", base64.b64decode(encoded_object)),
                          ("manifest.json", json.dumps(manifest, sort_keys=True).encode())):
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(content)
    return directory


class PolicyRun:
    """One run of the module: decide() reads the host (facts, the agent's files, what the kernel runs) and decides
    every step; act() carries them out (not in check mode) and reads the kernel back; result is what it returns."""

    def __init__(self, module):
        self.module, self.params = module, module.params
        self.facts, manager = host_facts(), package_manager()
        self.result = dict(changed=False, previous=None, policy_name=None, policy_hash=None, mode=None, links=[],
                           evaluations=None, selections=None, files_changed=[], files_removed=[], agent={}, notes=[],
                           input_problems=[], libbpf_missing=False, package_manager=manager,
                           libbpf_packages=libbpf_packages(manager),
                           kernel_release=self.facts["kernel_release"], hook=self.facts["hook"])
        self.status = self.wanted = None
        self.policy_changed = False

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, **dict(self.result, **extra))

    def finish(self):
        self.module.exit_json(**self.result)

    def decide(self):
        """Every decision, nothing written: ends the run where nothing is to be done (no agent to detach or to roll
        back, no hook and unpatched=skip) or nothing can be (no hook and unpatched=fail, no libbpf)."""
        params, result = self.params, self.result
        installed = agent_installed()
        if params["state"] == "absent" and not installed:
            result["notes"].append("no agent on this host: no bpfoom policy to detach")
            self.finish()
        if params["rollback_from"] and not installed:      # a rollback installs nothing either
            result["notes"].append("no agent on this host: no bpfoom policy to roll back")
            self.finish()
        self.mode = params["mode"]
        if params["state"] == "present" and not params["rollback_from"]:
            self.mode = mode_on_host(params["mode"], self.facts["hook"], params["unpatched"])
            if self.mode is None and params["unpatched"] == "skip":
                result["notes"].append(missing_hook_message(self.facts))
                self.finish()
            if self.mode is None:
                self.fail(missing_hook_message(self.facts), hook_missing=True, agent_failure="no_hook")
            if self.mode != params["mode"]:
                result["notes"].append(f"the kernel {self.facts['kernel_release']} has no BPF OOM hook: the policy "
                                       "runs in shadow mode")
        if self.facts["libbpf_version"] is None:
            result["libbpf_missing"] = True
            self.fail(libbpf_missing_message(result["package_manager"]))
        # The agent: its files, unit, bpffs and service (not for state=absent: detaching installs nothing).
        self.digests, self.texts = {}, {}
        if params["state"] == "present":
            plan = AgentHost(self.module).converge(decode_files(params["agent_files"]), self.module.check_mode)
            result["changed"], result["files_changed"] = plan.pop("changed"), plan.pop("files_changed")
            result["files_removed"], self.digests = plan.pop("files_removed", []), plan.pop("digests")
            self.texts = plan.pop("texts", {})
            result["agent"] = plan
            installed = installed or not self.module.check_mode
        self.status = run_bpfoomctl(self.module, "status", result=result) if installed else None
        self.before = policy_identity(self.status)
        self.wanted = wanted_identity(self.module, params, self.status, result, self.mode)
        self.policy_changed = needs_change(params, self.status, self.before, self.wanted)
        result.update(previous=self.before, changed=result["changed"] or self.policy_changed)
        if self.module._diff:
            removed = dict.fromkeys(result["files_removed"])
            result["diff"] = [{"before": describe(self.before, dict({path: old for path, (old, _new) in self.digests.items()},
                                                                    **dict.fromkeys(removed, "present"))),
                               "after": describe(self.wanted, dict({path: new for path, (_old, new) in self.digests.items()},
                                                                   **removed))},
                              *text_diffs(self.texts)]

    def act(self):
        """Have the agent make the change, then read the kernel back: what the agent says it did is not the proof."""
        if not self.policy_changed or self.module.check_mode:
            return
        params, result = self.params, self.result
        if params["state"] == "absent":
            done = run_bpfoomctl(self.module, "detach", result=result)
        elif params["rollback_from"]:
            done = run_bpfoomctl(self.module, "rollback", result=result)
        else:
            try:
                staged = stage_policy(self.module, params["manifest"], params["policy_object"])
            except OSError as error:
                shutil.rmtree(os.path.join(INCOMING_DIR, params["manifest"]["hash"]), ignore_errors=True)
                self.fail(f"cannot write {error.filename}: {error.strerror}; nothing was changed (the running policy "
                          f"is as before): free space in {STATE_DIR} and apply again", agent_failure="state_not_writable")
            try:
                done = run_bpfoomctl(self.module, "apply", f"--mode={self.mode}", staged, result=result)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        result["notes"] += done.get("notes", [])
        if self.status.get("desired_problem") and params["state"] == "present":
            result["notes"].append(f"the agent's stored copy was damaged ({self.status['desired_problem']}): stored again")
        self.status = run_bpfoomctl(self.module, "status", result=result)
        after = policy_identity(self.status)
        if after != self.wanted:
            self.fail(f"after the change, the kernel reports {describe(after).strip()!r}, "
                      f"expected {describe(self.wanted).strip()!r}")

    def report(self):
        """What the host runs after the run (in check mode: what it would run), with the kernel's links and counters."""
        result, status, check_mode = self.result, self.status or {}, self.module.check_mode
        target = self.wanted if check_mode else policy_identity(self.status)
        # In check mode, a policy that would be replaced says nothing about the one that would run.
        attached = None if check_mode and self.policy_changed else \
            next((p for p in status.get("policies", []) if p["managed"] and p["attached"]), None)
        result.update(policy_name=(target or {}).get("policy_name"), policy_hash=(target or {}).get("policy_hash"),
                      mode=(target or {}).get("mode"), links=(attached or {}).get("links", []),
                      evaluations=(attached or {}).get("evaluations"), selections=(attached or {}).get("selections"),
                      input_problems=status.get("input_problems", []))
        # A policy that selects nobody or names a unit this host lacks runs, but not as its names say: a warning
        # the operator cannot miss (verify and the metrics say it too).
        for problem in result["input_problems"]:
            self.module.warn(f"policy {result['policy_name']}: {problem}")


def main():
    module = PayloadModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[("manifest", "rollback_from")],
                           required_if=[("state", "present", ("manifest", "rollback_from"), True)])
    run = PolicyRun(module)
    run.decide()
    run.act()
    run.report()
    run.finish()


if __name__ == "__main__":
    main()

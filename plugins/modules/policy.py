#!/usr/bin/python
# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy
short_description: Make a host run a BPF OOM policy, verified from the kernel
version_added: 0.1.0
description:
  - Takes a policy built by M(bpfoom.fleet.policy_build) (its manifest and object on the controller), copies it
    to the host and has the agent (C(bpfoomctl apply)) attach it, then reads back from the kernel that both
    programs are attached to the hook and that the policy carries the expected name and hash.
  - Reports a change only when the kernel holds a different policy; the same name and hash already attached
    means no change and no reload.
  - A new policy is attached before the old one is detached (make-before-break); if the new one fails
    (verifier rejection, failed verification) the old one stays attached.
  - Needs the agent (role C(bpfoom.fleet.agent)) on the host.
author:
  - bpfoom.fleet maintainers (@bpfoom)
options:
  build:
    description:
      - The registered result of M(bpfoom.fleet.policy_build) for this host. Its C(manifest) names the manifest
        on the controller; the object is the C(policy.bpf.o) beside it.
      - In check mode, when the build wrote nothing, its C(policy_name) and C(policy_hash) are enough to predict.
      - Required when O(state=present).
    type: dict
  state:
    description:
      - V(present) makes the host run the policy; V(absent) detaches every bpfoom policy (the kernel's own choice).
      - V(rolled_back) goes back to the newest policy that verified on this host before the one it should run
        now (the agent's last-known-good list, C(bpfoomctl rollback)). Each run steps back once more, so run it once
        per rollback. Fails, changing nothing, when the host has no earlier policy.
    type: str
    choices: [present, absent, rolled_back]
    default: present
  src:
    description:
      - Internal, set by the action plugin; the directory on the host the policy was copied to.
    type: path
  policy:
    description:
      - Internal, set by the action plugin; the manifest's content.
    type: dict
attributes:
  action:
    description: An action plugin copies the policy from the controller.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  check_mode:
    description: Reads the kernel and predicts the change; copies and attaches nothing.
    support: full
  diff_mode:
    description: Shows the policy name and hash attached before and after.
    support: full
  platform:
    description: Linux hosts whose kernel carries the BPF OOM hook, with the bpfoom agent installed.
    support: full
    platforms: posix
notes:
  - On a kernel without the hook the task fails with a message saying so, and changes nothing; with
    O(state=absent) it succeeds unchanged (nothing can be attached there).
seealso:
  - module: bpfoom.fleet.policy_build
  - module: bpfoom.fleet.policy_info
"""

EXAMPLES = r"""
- name: Build the policy on the controller
  bpfoom.fleet.policy_build:
    name: web
    template: prefer_avoid
    params:
      avoid:
        cgroup: [sshd.service]
  register: built

- name: Make the host run it
  bpfoom.fleet.policy:
    build: "{{ built }}"

- name: Back to the policy that ran before
  bpfoom.fleet.policy:
    state: rolled_back

- name: Back to the kernel's own OOM choice
  bpfoom.fleet.policy:
    state: absent
"""

RETURN = r"""
policy_name:
  description: Name of the policy the kernel reports as attached after the task.
  returned: always
  type: str
  sample: web
policy_hash:
  description: Hash of that policy, read back from the object in the kernel.
  returned: always
  type: str
  sample: 905973c706e5b2a1f0f4c1e6a7d1b3e9c0d2f4a6b8c0e2f4a6b8c0d2e4f6a8b0
previous:
  description: Name and hash of the policy attached before the task (null if none).
  returned: always
  type: dict
  sample: {"policy_name": "web_v1", "policy_hash": "5eb9382d..."}
links:
  description: The kernel's links of the attached policy (attach type, target function, program tag).
  returned: when a policy is attached
  type: list
  elements: dict
notes:
  description: What the agent noted (for select_pid, the target process it resolved).
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoom_host import BPFOOMCTL, policy_identity, run_bpfoomctl


# The bpfoomctl command that brings each state about.
STATES = {"present": "apply", "absent": "detach", "rolled_back": "rollback"}


def wanted_identity(module, state, policy, status):
    if state == "present":
        return {"policy_name": policy["name"], "policy_hash": policy["hash"]}
    if state == "rolled_back":
        if not status.get("rollback_target"):
            module.fail_json(msg="no earlier policy that verified on this host: nothing to roll back to "
                                 "(state=absent gives the kernel's own choice)", changed=False)
        return status["rollback_target"]
    return None


def exit_nothing_to_detach(module, why):
    """state=absent where no bpfoom policy can be attached: unchanged, saying why."""
    module.exit_json(changed=False, previous=None, policy_name=None, policy_hash=None, links=[], notes=[why])


def describe(identity):
    return "none (the kernel's own choice)\n" if identity is None else \
        f"policy_name: {identity['policy_name']}\npolicy_hash: {identity['policy_hash']}\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(build=dict(type="dict"), state=dict(type="str", choices=list(STATES), default="present"),
                           src=dict(type="path"), policy=dict(type="dict")),
        required_if=[("state", "present", ("policy",))],
        supports_check_mode=True,
    )
    state, policy = module.params["state"], module.params["policy"]
    if state == "absent" and not os.path.exists(BPFOOMCTL):
        exit_nothing_to_detach(module, "no agent on this host: no bpfoom policy to detach")
    status = run_bpfoomctl(module, "status")
    if not status["hook"] and state == "absent":
        exit_nothing_to_detach(module, f"the kernel {status['kernel_release']} has no BPF OOM hook: nothing to detach")
    if not status["hook"]:
        missing = [name for name, present in status["hook_functions"].items() if not present]
        module.fail_json(msg=f"the kernel {status['kernel_release']} has no BPF OOM hook ({', '.join(missing)} not in its BTF): "
                             "boot a kernel carrying the bpf_oom_evaluate_task series, or leave this host out",
                         hook_missing=True, changed=False)
    before = policy_identity(status)
    wanted = wanted_identity(module, state, policy, status)
    changed = (before or {}).get("policy_hash") != (wanted or {}).get("policy_hash")
    result = dict(changed=changed, previous=before, notes=[])
    if module._diff:
        result["diff"] = {"before": describe(before), "after": describe(wanted)}
    if changed and not module.check_mode:
        command = [STATES[state], module.params["src"]] if state == "present" else [STATES[state]]
        done = run_bpfoomctl(module, *command)
        status, result["notes"] = done["status"], done.get("notes", [])
        after = policy_identity(status)
        if after != wanted:
            module.fail_json(msg=f"after applying, the kernel reports {describe(after).strip()!r}, "
                                 f"expected {describe(wanted).strip()!r}", **result)
    attached = next((p for p in status["policies"] if p["managed"] and p["attached"]), None)
    target = wanted if changed and module.check_mode else policy_identity(status)
    result.update(policy_name=(target or {}).get("policy_name"), policy_hash=(target or {}).get("policy_hash"),
                  links=attached["links"] if attached else [])
    module.exit_json(**result)


if __name__ == "__main__":
    main()

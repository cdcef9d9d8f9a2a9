#!/usr/bin/python
# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: policy_build
short_description: Render and compile a BPF OOM policy for a host, on the controller
version_added: 0.1.0
description:
  - Validates the policy, renders its Jinja template (sandboxed; the template sees the policy and its C literals,
    not host variables, so a policy's source depends on the policy alone), and compiles it with
    C(clang -target bpf) into a CO-RE object that runs on every kernel carrying the BPF OOM hook.
  - Runs on the controller only (an action plugin); nothing is sent to the host.
  - Objects are cached by content (rendered source, headers, compiler version and flags) under O(cache_dir),
    guarded by a lock, so hosts sharing a policy cause one C(clang) run, whatever the number of forks.
  - The object carries its policy name and policy hash in C(.rodata); the hash is the sha256 of the rendered
    source (without the hash itself).
  - The templates, their parameters and their ranking rules are in the
    R(policy catalog guide,ansible_collections.bpfoom.fleet.docsite.policies).
author:
  - bpfoom.fleet maintainers (@bpfoom)
options:
  policy:
    description:
      - The policy as one value, as a host group's C(bpfoom_policy) holds it.
      - What each template accepts is checked by the policy catalog before anything is rendered; a refusal names
        the parameter and what is allowed (R(templates,ansible_collections.bpfoom.fleet.docsite.policies.templates)).
    type: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the policy, shown by the kernel in every OOM report (C(policy_name=NAME)).
          - 1 to 15 characters among letters, digits and C(_.:+@/-).
        type: str
        required: true
      template:
        description:
          - A template of the catalog in C(templates/bpf/policies/)
            (R(templates,ansible_collections.bpfoom.fleet.docsite.policies.templates)).
          - Mutually exclusive with O(policy.template_file).
        type: str
        choices: [select_pid, prefer_avoid, cgroup_priority]
      template_file:
        description:
          - Absolute path of your own template; it must extend C(frame.bpf.c.j2) and define the C(rank) block.
          - Its O(policy.params) may be integers and strings of up to 63 printable characters, given to the
            template as C literals in C(c.params).
        type: path
      params:
        description:
          - Parameters of the template. Unknown keys, wrong types, values out of range and empty lists are refused
            before anything is rendered. What each template takes is below; what it does with them is in the
            R(templates table,ansible_collections.bpfoom.fleet.docsite.policies.templates).
          - V(select_pid) takes C(unit) (a C(NAME.service), its C(MainPID)) or C(pidfile) (an absolute path to a
            root-owned pidfile), one of the two.
          - V(prefer_avoid) takes C(prefer) and C(avoid), each a dict of lists C(comm) (exact command names),
            C(comm_prefix), C(cgroup) (unit or slice names), C(uid); an C(avoid) needs a C(uid) or C(cgroup) beside
            C(comm) or C(comm_prefix) (a process chooses its own name), unless O(policy.protect_by_forgeable_comm).
          - V(cgroup_priority) takes C(priorities), a list of C({cgroup, priority}) (0 to 1000), and
            C(default_priority) (0 to 1000, default 500).
          - A O(policy.template_file) takes flat integers and strings of up to 63 printable characters.
        type: dict
        default: {}
      tie_breaker:
        description:
          - Between two tasks of the same rank, V(kernel) lets the kernel's C(oom_badness()) decide, V(youngest)
            picks the task started last, V(oldest) the one started first.
        type: str
        choices: [kernel, youngest, oldest]
        default: kernel
      strict:
        description:
          - Only for C(prefer_avoid). When true, avoided tasks are never the victim of a memcg OOM, even if
            that leaves it without a victim (the charge fails). In a global OOM they rank below every other
            task but stay eligible, so a global OOM always has a victim
            (R(templates,ansible_collections.bpfoom.fleet.docsite.policies.templates)).
        type: bool
        default: false
      protect_by_forgeable_comm:
        description:
          - Only for V(prefer_avoid). When true, an C(avoid) by C(comm) or C(comm_prefix) alone is accepted, although
            any process, a tenant's too, can take an avoided name and be spared in place of the one meant
            (R(who may protect a task,ansible_collections.bpfoom.fleet.docsite.policies.who_may_protect_a_task)).
        type: bool
        default: false
      smoke:
        description:
          - The canary's smoke test (R(the smoke test,ansible_collections.bpfoom.fleet.docsite.operations.the_smoke_test));
            not part of the object, ignored by the build.
        type: dict
      mode:
        description:
          - How hosts run the policy (V(enforce) or V(shadow), M(bpfoom.fleet.policy)'s O(bpfoom.fleet.policy#module:mode));
            not part of the object, ignored by the build.
        type: str
        choices: [enforce, shadow]
        default: enforce
  cache_dir:
    description:
      - Where compiled objects are kept on the controller.
      - Defaults to C($XDG_CACHE_HOME/bpfoom/objects) (C(~/.cache/bpfoom/objects)).
    type: path
  clang:
    description:
      - The C(clang) command to compile with.
    type: str
    default: clang
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  check_mode:
    description: Renders and reports what would be built; writes nothing to the cache.
    support: full
  diff_mode:
    description: Shows the source last built under the policy's name and the one built now.
    support: full
  platform:
    description: Runs on the controller; needs C(clang) and libbpf's headers there (Debian C(clang libbpf-dev)).
    support: full
    platforms: posix
notes:
  - A missing C(clang) or libbpf header fails with one message naming the packages to install.
seealso:
  - ref: ansible_collections.bpfoom.fleet.docsite.policies
    description: The policy catalog guide, its templates, parameters and ranking rules.
"""

EXAMPLES = r"""
- name: Build the web tier's policy (batch jobs die first, sshd last)
  bpfoom.fleet.policy_build:
    policy:
      name: web
      template: prefer_avoid
      params:
        prefer:
          cgroup: [batch.slice]
          comm_prefix: [report-]
        avoid:
          cgroup: [sshd.service, postgresql.service]
  register: web_policy

- name: Build what the host group's variables say (the rollout does this once per distinct policy)
  bpfoom.fleet.policy_build:
    policy: "{{ bpfoom_policy }}"
  register: built

- name: Kill a given service first (its MainPID is resolved on each host)
  bpfoom.fleet.policy_build:
    policy:
      name: kill_cache
      template: select_pid
      params:
        unit: memcached.service
"""

RETURN = r"""
policy_name:
  description: The policy's name, as the kernel will report it.
  returned: always
  type: str
  sample: web
policy_hash:
  description: sha256 of the rendered source (without the hash), also stored in the object's C(.rodata).
  returned: always
  type: str
  sample: 905973c706e5b2a1f0f4c1e6a7d1b3e9c0d2f4a6b8c0e2f4a6b8c0d2e4f6a8b0
template:
  description: The template the policy was rendered from.
  returned: always
  type: str
  sample: prefer_avoid
key:
  description: The compile cache's key of the object (source, headers, compiler version and flags).
  returned: always
  type: str
  sample: 4f1c0e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e
object:
  description: Path of the compiled object on the controller; M(bpfoom.fleet.policy) sends it to the host.
  returned: always
  type: str
  sample: /root/.cache/bpfoom/objects/4f1c.../policy.bpf.o
manifest:
  description:
    - What travels with the object to the host, which checks the object against it.
    - C(object_sha256) is missing in check mode when the object has not been built yet.
    - C(host_inputs) lists what the agent resolves on each host (for C(select_pid), the target's PID).
  returned: always
  type: dict
  sample: {"name": "kill_cache", "hash": "905973c7...", "template": "select_pid", "object_sha256": "2d8a3c0e...",
           "host_inputs": [{"map": "bpfoom_target_pids", "pid_of": {"unit": "memcached.service"}}]}
source:
  description: Path of the rendered C source kept next to the object.
  returned: always
  type: str
  sample: /root/.cache/bpfoom/objects/4f1c.../policy.bpf.c
compiled:
  description: Whether this task ran C(clang) (false when the object was cached, or in check mode).
  returned: always
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bpfoom.fleet.plugins.module_utils.policy_build_args import ARGUMENT_SPEC


def main():
    # The work happens in the action plugin on the controller; reaching here means it was bypassed.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="bpfoom.fleet.policy_build runs on the controller as an action plugin; "
                         "call it as a task, not as a module on the host")


if __name__ == "__main__":
    main()

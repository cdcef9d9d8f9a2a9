#!/usr/bin/python
# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: agent
short_description: Install the bpfoom agent (bpfoomctl and bpfoom.service) in one execution
version_added: 0.1.0
description:
  - The agent part of M(bpfoom.fleet.policy), for a host that should run the agent without being given a policy
    (the role C(bpfoom.fleet.agent) calls it).
  - Compares the checksums of the agent's files (sent by the action plugin in the module's arguments) with what
    the host has and writes only what differs (atomically, root-owned), reloads systemd only when the unit
    changed, enables and starts C(bpfoom.service) only when it is not (restarts it when its program changed; a
    restart keeps the policy attached), mounts bpffs when missing.
  - Works on kernels without the BPF OOM hook too (the agent then has nothing to attach).
author:
  - bpfoom.fleet maintainers (@bpfoom)
extends_documentation_fragment:
  - bpfoom.fleet.agent
attributes:
  action:
    description: An action plugin adds the agent's files to the module's arguments.
    support: full
  async:
    description: Cannot run asynchronously.
    support: none
  become:
    description: Needs root on the host.
    support: full
  check_mode:
    description: Reports which files would change and what would be done to the service; writes nothing.
    support: full
  diff_mode:
    description: Shows the checksum of each file that changes, before and after.
    support: full
  platform:
    description: Linux hosts with systemd and libbpf1.
    support: full
    platforms: posix
seealso:
  - module: bpfoom.fleet.policy
"""

EXAMPLES = r"""
- name: Install the agent with its defaults
  bpfoom.fleet.agent:
  become: true

- name: Install it with a gentler OOM score
  bpfoom.fleet.agent:
    agent:
      oom_score_adj: -500
  become: true
"""

RETURN = r"""
files_changed:
  description: The agent's files this task wrote (or would write, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/bpfoom.service]
files_removed:
  description: What an older agent installed that this one does not have, removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/usr/local/lib/bpfoom/bpfoomctl.py]
agent:
  description: What the task did to the service and bpffs.
  returned: always
  type: dict
  sample: {"unit_changed": true, "enable": true, "start": true, "restart": false, "mount_bpffs": false}
libbpf_missing:
  description: True when the host lacks libbpf.so.1; the task then fails, changing nothing.
  returned: always
  type: bool
  sample: false
package_manager:
  description: The host's package manager, null if none is known.
  returned: always
  type: str
  sample: apt
libbpf_packages:
  description: The packages that install libbpf.so.1 with that package manager (V(libbpf1) with apt, V(libbpf) otherwise).
  returned: always
  type: list
  elements: str
  sample: [libbpf1]
"""

from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import (
    AGENT_SPEC, AgentHost, PayloadModule, decode_files, libbpf_missing_message, libbpf_packages, libbpf_version,
    package_manager, text_diffs)


def main():
    module = PayloadModule(argument_spec=AGENT_SPEC, supports_check_mode=True)
    manager = package_manager()
    result = dict(changed=False, files_changed=[], files_removed=[], agent={}, libbpf_missing=False,
                  package_manager=manager, libbpf_packages=libbpf_packages(manager))
    if libbpf_version() is None:
        result["libbpf_missing"] = True
        module.fail_json(msg=libbpf_missing_message(manager), **result)
    plan = AgentHost(module).converge(decode_files(module.params["agent_files"]), module.check_mode)
    digests, texts = plan.pop("digests"), plan.pop("texts")
    result.update(changed=plan.pop("changed"), files_changed=plan.pop("files_changed"),
                  files_removed=plan.pop("files_removed"), agent=plan)
    if module._diff:
        result["diff"] = [{"before": "".join(f"file {path}: {old or 'absent'}\n" for path, (old, _new) in digests.items())
                           + "".join(f"file {path}: present\n" for path in result["files_removed"]),
                           "after": "".join(f"file {path}: {new}\n" for path, (_old, new) in digests.items())
                           + "".join(f"file {path}: absent\n" for path in result["files_removed"])},
                          *text_diffs(texts)]
    module.exit_json(**result)


if __name__ == "__main__":
    main()

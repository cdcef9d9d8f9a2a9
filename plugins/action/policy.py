# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of bpfoom.fleet.policy: copy the built policy to the host, then run the module."""

from __future__ import annotations

import json
import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

POLICY_FILES = ("policy.bpf.o", "manifest.json")


class ActionModule(ActionBase):

    TRANSFERS_FILES = True
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        host = (task_vars or {}).get("inventory_hostname", "the host")
        state = self._task.args.get("state", "present")
        build = self._task.args.get("build") or {}
        module_args = {"state": state}
        if state == "present":
            if not isinstance(build, dict) or not build.get("manifest") or not build.get("policy_hash"):
                raise AnsibleActionFail(f"{host}: build is required with state=present: "
                                        "register the result of bpfoom.fleet.policy_build and pass it")
            manifest_path = os.path.expanduser(build["manifest"])
            if os.path.exists(manifest_path):
                try:
                    with open(manifest_path) as handle:
                        module_args["policy"] = json.load(handle)
                except (OSError, ValueError) as error:
                    raise AnsibleActionFail(f"{host}: cannot read the policy manifest {manifest_path}: {error}") from None
            elif self._task.check_mode:
                # A check-mode build wrote nothing: predict from what it reported.
                module_args["policy"] = {"name": build["policy_name"], "hash": build["policy_hash"]}
            else:
                raise AnsibleActionFail(f"{host}: the policy manifest {manifest_path} is missing: build the policy again")
        try:
            if state == "present" and not self._task.check_mode:
                remote_dir = self._make_tmp_path()
                for name in POLICY_FILES:
                    local = os.path.join(os.path.dirname(manifest_path), name)
                    if not os.path.exists(local):
                        raise AnsibleActionFail(f"{host}: {local} is missing: build the policy again")
                    self._transfer_file(local, self._connection._shell.join_path(remote_dir, name))
                module_args["src"] = remote_dir
            result.update(self._execute_module(module_name="bpfoom.fleet.policy", module_args=module_args,
                                               task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if result.get("failed") and not str(result.get("msg", "")).startswith(host):
            result["msg"] = f"{host}: {result.get('msg')}"
        return result

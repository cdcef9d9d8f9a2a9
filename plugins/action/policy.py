# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of bpfoom.fleet.policy: put the agent's files and the built policy into the module's
arguments, so that the host is converged by one remote execution."""

from __future__ import annotations

import base64
import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.agent_payload import host_named, run_with_agent


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "the host")
        args = dict(self._task.args)
        build = args.pop("build", None)
        proven = args.pop("proven_policies", None)
        if args.get("state", "present") == "absent":     # detaching installs nothing
            result.update(host_named(host, self._execute_module(module_name="bpfoom.fleet.policy", module_args=args,
                                                                task_vars=task_vars)))
            return result
        if not args.get("rollback_from"):
            args.update(self._policy_args(host, build))
            if proven is not None and build.get("policy_hash") not in proven:
                raise AnsibleActionFail(
                    f"{host}: {build.get('policy_name')} ({str(build.get('policy_hash'))[:12]}) is not a policy this "
                    f"workflow's canary proved ({', '.join(proven.values()) or 'none'}): the policy map, the "
                    "group_vars or the collection changed since the canary ran. Launch the workflow again, from its "
                    "canary.")
        result.update(run_with_agent(self, task_vars, "bpfoom.fleet.policy", args))
        return result

    def _policy_args(self, host, build):
        """The manifest and the object of the build, as the module receives them."""
        if not isinstance(build, dict) or not isinstance(build.get("manifest"), dict):
            raise AnsibleActionFail(f"{host}: build is required with state=present: register the result of "
                                    "bpfoom.fleet.policy_build and pass it (or give rollback_from)")
        args = {"manifest": build["manifest"]}
        obj = build.get("object") or ""
        if os.path.exists(obj):
            with open(obj, "rb") as handle:
                args["policy_object"] = base64.b64encode(handle.read()).decode()
        elif not self._task.check_mode:
            raise AnsibleActionFail(f"{host}: the built object {obj or '(none)'} is missing on the controller: "
                                    "build the policy again (bpfoom.fleet.policy_build)")
        return args

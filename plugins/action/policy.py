# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of bpfoom.fleet.policy: put the agent's files and the built policy into the module's
arguments, so that the host is converged by one remote execution.

A rollout's host is one task, whatever it needs after its apply (the steps below run only where they are
needed: libbpf and the apply again, the canary's smoke test). A task that only some hosts need would cost every
host of the fleet a worker of the controller's to find that it is not one of them.
"""

from __future__ import annotations

import base64
import os

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.agent_payload import host_named, run_with_agent

MODULE = "bpfoom.fleet.policy"
# The step a failed or unreachable host stopped at, as the rollout's report names it.
APPLY = "Apply the policy (agent, bpffs, make-before-break; verified from the kernel)"
INSTALL_LIBBPF = "Install libbpf on a host that lacks it"
APPLY_AGAIN = "Apply the policy now that libbpf is there"
SMOKE = "Provoke a contained memcg OOM and check the victim"
# The keys of a policy's `smoke` section that the smoke test takes (the section is the user's group_vars).
SMOKE_KEYS = ("processes", "limit_mib", "expect_victim", "timeout")


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "the host")
        args = dict(self._task.args)
        if args.get("arguments_from") is not None:
            args = dict(self._planned_args(host, args.pop("arguments_from"), task_vars), **args)
        build = args.pop("build", None)
        proven = args.pop("proven_policies", None)
        install_libbpf, packages = args.pop("install_libbpf", False), args.pop("libbpf_packages", None)
        smoke = args.pop("smoke", None)
        if args.get("state", "present") == "absent":     # detaching installs nothing
            result.update(host_named(host, self._execute_module(module_name=MODULE, module_args=args,
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
        step = APPLY
        try:
            applied = run_with_agent(self, task_vars, MODULE, args)
            if applied.get("libbpf_missing") and install_libbpf and not self._task.check_mode:
                step = INSTALL_LIBBPF
                names = list(packages or applied.get("libbpf_packages") or [])
                installed = self._install(host, applied.get("package_manager"), names, task_vars)
                if installed.get("failed"):
                    return dict(result, **installed, failed_step=step)
                step = APPLY_AGAIN
                applied = dict(run_with_agent(self, task_vars, MODULE, args), libbpf_installed=names)
                if applied.get("failed"):
                    applied["failed_step"] = step
            if smoke and applied.get("mode") == "enforce" and not applied.get("failed") and not self._task.check_mode:
                step = SMOKE
                applied["smoke"] = self._execute_module(
                    module_name="bpfoom.fleet.policy_smoke", task_vars=task_vars,
                    module_args=dict({key: smoke[key] for key in SMOKE_KEYS if key in smoke},
                                     expect_policy_name=build.get("policy_name")))
                if applied["smoke"].get("failed"):
                    applied.update(failed=True, msg=applied["smoke"].get("msg"), failed_step=step)
        except AnsibleConnectionFailure as error:
            # Noted as a failure of this step (the rollout's rescue reports the host unreachable and its batch
            # gate counts it), not left to Ansible, which would drop the host from the play and the report.
            return dict(result, failed=True, unreachable_during=step, failed_step=step,
                        msg=f"{host}: stopped answering during \"{step}\": {error.message}")
        result.update(applied)
        return result

    @staticmethod
    def _planned_args(host, name, task_vars):
        """This host's arguments in the plan held by the variable `name` (bpfoom.fleet.rollout_stage's: apply_args,
        and each host's index in apply_of), read as the variable is. A template that looked the host up in the
        plan would cost each host time in proportion to the fleet: templating wraps every dictionary it reaches,
        the fleet's own included (10 ms a host at 10,000 hosts, a thousand times the lookup)."""
        plan = task_vars.get(name)
        try:
            return dict(plan["apply_args"][plan["apply_of"][host]])
        except (KeyError, IndexError, TypeError):
            raise AnsibleActionFail(f"{host}: arguments_from={name}: that variable holds no arguments for this host "
                                    "(give a plan bpfoom.fleet.rollout_stage or rollback_stage returns, with this host "
                                    "in it)")

    def _install(self, host, package_manager, names, task_vars):
        """Install libbpf as ansible.builtin.package would with use=<the host's package manager>."""
        module = f"ansible.legacy.{package_manager}"
        if not package_manager or not self._shared_loader_obj.module_loader.has_plugin(module):
            return {"failed": True, "msg": f"{host}: libbpf.so.1 is missing and the package manager of this host "
                                           f"({package_manager or 'none found'}) is not one Ansible can drive: "
                                           f"install {' or '.join(names)} on it, then run again"}
        installed = self._execute_module(module_name=module, module_args={"name": names, "state": "present"},
                                         task_vars=task_vars)
        return host_named(host, installed)

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

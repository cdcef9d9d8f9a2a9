# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of bpfoom.fleet.policy_build: validate, render, compile on the controller."""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.bpfoom.fleet.plugins.module_utils.policy_build_args import ARGUMENT_SPEC
from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_catalog, policy_compile


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        host = (task_vars or {}).get("inventory_hostname", "localhost")
        try:
            _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        except AnsibleActionFail as error:
            raise AnsibleActionFail(f"{host}: {error.message}") from None
        policy = {key: value for key, value in args["policy"].items() if value is not None}
        try:
            built = policy_compile.build_policy(policy, args["cache_dir"], args["clang"],
                                                check_mode=self._task.check_mode)
        except policy_catalog.PolicyError as error:
            raise AnsibleActionFail(f"{host}: policy {policy.get('name')!r}: parameter {error}") from None
        except policy_compile.CompileError as error:
            raise AnsibleActionFail(f"{host}: {error}") from None
        source = built.pop("source_text")
        cache_dir = policy_compile.resolve_cache_dir(args["cache_dir"])
        if self._task.diff:
            result["diff"] = {"before": self._previous_source(cache_dir, built["policy_name"]), "after": source,
                              "before_header": f"policy {built['policy_name']}: source built before",
                              "after_header": f"policy {built['policy_name']}: source now"}
        if not self._task.check_mode:
            self._remember(cache_dir, built["policy_name"], built["key"])
        result.update(built)
        return result

    @staticmethod
    def _name_record(cache_dir, name):
        return os.path.join(cache_dir, "names", name.replace("/", "%2f"))

    def _previous_source(self, cache_dir, name):
        """The source last built under this policy name, for diff mode ('' if none)."""
        try:
            with open(self._name_record(cache_dir, name)) as record:
                previous = record.read().strip()
            with open(os.path.join(cache_dir, previous, "policy.bpf.c")) as source:
                return source.read()
        except OSError:
            return ""

    def _remember(self, cache_dir, name, key):
        record = self._name_record(cache_dir, name)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with open(record + ".tmp", "w") as handle:
            handle.write(key + "\n")
        os.replace(record + ".tmp", record)

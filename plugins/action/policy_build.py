# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of bpfoom.fleet.policy_build: validate, render, compile on the controller."""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

from ansible_collections.bpfoom.fleet.plugins.module_utils.policy_build_args import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF)
from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_catalog, policy_compile


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "localhost")
        try:
            _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC,
                                                            mutually_exclusive=MUTUALLY_EXCLUSIVE,
                                                            required_one_of=REQUIRED_ONE_OF)
        except AnsibleActionFail as error:
            raise AnsibleActionFail(f"{host}: {error.message}") from None
        args = {key: value for key, value in args.items() if value is not None}
        try:
            spec = policy_catalog.validate(args)
        except policy_catalog.PolicyError as error:
            raise AnsibleActionFail(f"{host}: policy parameter {error}") from None

        source, policy_hash = policy_catalog.render(spec, self._renderer(task_vars))
        manifest = {"name": spec["name"], "hash": policy_hash, "template": spec["template"],
                    "tie_breaker": spec["tie_breaker"], "strict": spec["strict"],
                    "host_params": policy_catalog.host_params(spec)}
        cache_dir = os.path.expanduser(args.get("cache_dir") or policy_compile.default_cache_dir())
        try:
            tools = policy_compile.toolchain(args.get("clang", "clang"), cache_dir,
                                             remember=not self._task.check_mode)
            key = policy_compile.cache_key(source, tools)
            cached = policy_compile.lookup(cache_dir, key)
            if self._task.check_mode:
                built, compiled = cached or manifest, False
            else:
                built, compiled = policy_compile.build(source, manifest, cache_dir, tools, key)
        except policy_compile.CompileError as error:
            raise AnsibleActionFail(f"{host}: {error}") from None

        entry = os.path.join(cache_dir, key)
        result.update(
            changed=cached is None,
            compiled=compiled,
            policy_name=spec["name"],
            policy_hash=policy_hash,
            template=spec["template"],
            object=os.path.join(entry, "policy.bpf.o"),
            manifest=os.path.join(entry, "manifest.json"),
            source=os.path.join(entry, "policy.bpf.c"),
            object_sha256=built.get("object_sha256"),
            host_params=manifest["host_params"],
        )
        if self._task.diff:
            result["diff"] = {"before": self._previous_source(cache_dir, host), "after": source,
                              "before_header": f"{host}: previous policy source", "after_header": f"{host}: {spec['name']}"}
        if not self._task.check_mode:
            self._remember(cache_dir, host, key)
        return result

    def _renderer(self, task_vars):
        """Render with Ansible's templar, as ansible.builtin.template does: host and group vars included."""
        def render_template(path, variables):
            searchpath = [os.path.dirname(path), policy_catalog.BPF_TEMPLATE_DIR]
            data = trust_as_template(self._loader.get_text_file_contents(path))
            templar = self._templar.copy_with_new_env(searchpath=searchpath,
                                                      available_variables=dict(task_vars, **variables))
            return templar.template(data, escape_backslashes=False,
                                    overrides=dict(trim_blocks=True, lstrip_blocks=True))
        return render_template

    @staticmethod
    def _host_record(cache_dir, host):
        return os.path.join(cache_dir, "hosts", host)

    def _previous_source(self, cache_dir, host):
        """The source last built for this host, for diff mode ('' if none)."""
        try:
            with open(self._host_record(cache_dir, host)) as record:
                previous = record.read().strip()
            with open(os.path.join(cache_dir, previous, "policy.bpf.c")) as source:
                return source.read()
        except OSError:
            return ""

    def _remember(self, cache_dir, host, key):
        record = self._host_record(cache_dir, host)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with open(record + ".tmp", "w") as handle:
            handle.write(key + "\n")
        os.replace(record + ".tmp", record)

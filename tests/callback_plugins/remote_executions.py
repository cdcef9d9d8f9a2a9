# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: count the module executions and SSH sessions of every host, as they happen.

Counted, not estimated: ActionBase._execute_module (every module an action
runs, on a host or, delegated, on the controller) and the SSH connection's
_run (every ssh or sftp process) are wrapped when this callback loads, in
ansible-playbook's main process, before it forks the workers that inherit the
wrappers. Each call appends one line to $BPFOOM_EXEC_LOG (O_APPEND: whole lines
from concurrent workers): "exec HOST MODULE CONNECTION" or "ssh HOST". The
policy catalog's render is wrapped the same way ("render NAME"), so that a
benchmark counts template renders.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase
from ansible.plugins.callback import CallbackBase
from ansible.plugins.connection import ssh

DOCUMENTATION = r"""
name: remote_executions
type: aggregate
short_description: Count module executions and SSH sessions per host (tests and benchmarks only)
description:
  - Appends a line to the file named by E(BPFOOM_EXEC_LOG) for every module execution and every ssh process.
requirements:
  - E(BPFOOM_EXEC_LOG) set to a writable path
"""


def _log(line):
    path = os.environ.get("BPFOOM_EXEC_LOG")
    if path:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(handle, (line + "\n").encode())
        finally:
            os.close(handle)


def _counting_execute_module(original):
    def execute_module(self, module_name=None, module_args=None, tmp=None, task_vars=None, *args, **kwargs):
        host = (task_vars or {}).get("inventory_hostname", "?")
        _log(f"exec {host} {module_name or self._task.action} {self._connection.transport}")
        return original(self, module_name, module_args, tmp, task_vars, *args, **kwargs)
    execute_module.counting = True
    return execute_module


def _counting_run(original):
    def run(self, cmd, in_data, *args, **kwargs):
        _log(f"ssh {self._play_context.remote_addr}:{self.get_option('port')}")
        return original(self, cmd, in_data, *args, **kwargs)
    run.counting = True
    return run


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "remote_executions"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        if not getattr(ActionBase._execute_module, "counting", False):
            ActionBase._execute_module = _counting_execute_module(ActionBase._execute_module)
        if not getattr(ssh.Connection._run, "counting", False):
            ssh.Connection._run = _counting_run(ssh.Connection._run)
        try:
            from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_catalog
        except ImportError:         # the collection is not on the path: nothing to render here
            return
        if not getattr(policy_catalog.render, "counting", False):
            original = policy_catalog.render

            def render(spec, *args, **kwargs):
                _log(f"render {spec['name']}")
                return original(spec, *args, **kwargs)
            render.counting = True
            policy_catalog.render = render


def read_counts(path):
    """What a log this callback wrote says: {"executions": {host: {"exec": remote module executions,
    "local": executions delegated to the controller}}, "ssh_sessions": {"ADDRESS:PORT": ssh processes},
    "renders": template renders}."""
    counts = {"executions": {}, "ssh_sessions": {}, "renders": 0}
    if not os.path.exists(path):
        return counts
    with open(path) as log:
        for line in log:
            fields = line.split()
            if fields[0] == "exec":
                host = counts["executions"].setdefault(fields[1], {"exec": 0, "local": 0})
                host["local" if fields[3] == "local" else "exec"] += 1
            elif fields[0] == "ssh":
                counts["ssh_sessions"][fields[1]] = counts["ssh_sessions"].get(fields[1], 0) + 1
            elif fields[0] == "render":
                counts["renders"] += 1
    return counts

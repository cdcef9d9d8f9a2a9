# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the agent: its files as the host module receives them, in its arguments.

The agent's package (plugins/module_utils/bpfoomctl/, each module as
bpfoomctl/<module>.py) is read, the bpfoomctl shim written and the unit rendered
(bpfoom.service.in beside this file, with the agent options and the paths of the
agent's contract, plugins/module_utils/bpfoomctl/contract.py) here; they travel
base64-encoded inside the one module execution that converges the host
(plugins/module_utils/agent_host.py says where each goes).

The unit is a string.Template, not Jinja: it runs once per host in a fresh
worker, where compiling a Jinja template cost each host 20 ms of the
controller's time (a third of its apply; tests/benchmarks/rollout_controller_scale.py).
"""

from __future__ import annotations

import base64
import os
import string

from ansible.errors import AnsibleActionFail
from ansible.plugins.filter.core import comment

from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import AGENT_OPTIONS, PACKAGE_PREFIX, SHIM, UNIT_NAME
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import contract

HERE = os.path.dirname(__file__)
PACKAGE_SOURCE = os.path.normpath(os.path.join(HERE, "..", "module_utils", "bpfoomctl"))
UNIT_TEMPLATE = os.path.join(HERE, "bpfoom.service.in")
CATALOG_SOURCE = os.path.join(HERE, contract.CATALOG)
RANGES = {"oom_score_adj": (-1000, 1000), "restart_sec": (0, 3600)}


def agent_options(options):
    """The agent options with their defaults, checked: errors name the option and the range."""
    merged = {key: spec["default"] for key, spec in AGENT_OPTIONS.items()}
    merged.update({key: value for key, value in (options or {}).items() if value is not None})
    unknown = sorted(set(merged) - set(AGENT_OPTIONS))
    if unknown:
        raise AnsibleActionFail(f"agent: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(AGENT_OPTIONS)}")
    for key, (low, high) in RANGES.items():
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise AnsibleActionFail(f"agent.{key}: {value!r} is not an integer from {low} to {high}")
    metrics = merged["metrics_file"]
    if metrics and (not isinstance(metrics, str) or not os.path.isabs(metrics) or any(c in metrics for c in " \n\"'")):
        raise AnsibleActionFail(f"agent.metrics_file: {metrics!r} is not an absolute path without spaces or quotes "
                                "(an empty one writes no metrics)")
    return merged


def package_files():
    """{bpfoomctl/<module>.py: content} of the agent's package."""
    files = {}
    for entry in sorted(os.listdir(PACKAGE_SOURCE)):
        if entry.endswith(".py"):
            with open(os.path.join(PACKAGE_SOURCE, entry), "rb") as handle:
                files[PACKAGE_PREFIX + entry] = handle.read()
    return files


def unit_text(options, managed="Ansible managed"):
    """The agent's systemd unit for these agent options."""
    metrics = options["metrics_file"]
    with open(UNIT_TEMPLATE, encoding="utf-8") as handle:
        template = string.Template(handle.read())
    return template.substitute(
        managed=comment(str(managed)), bpffs=contract.BPFFS, state_dir=contract.STATE_DIR,
        state_directory=os.path.basename(contract.STATE_DIR), command=contract.COMMAND,
        restart_sec=options["restart_sec"], oom_score_adj=options["oom_score_adj"],
        metrics_option=f" --metrics-file={metrics}" if metrics else "",
        metrics_paths=("# The metrics' directory (node_exporter's textfile collector), if it exists when the agent "
                       f"starts.\nReadWritePaths=-{os.path.dirname(metrics)}\n") if metrics else "")


def agent_files(task_vars, options):
    """{file name: base64 content} of the agent: its package, the shim, the unit and the journal catalog."""
    files = package_files()
    files[SHIM] = contract.SHIM_TEXT.encode()
    files[UNIT_NAME] = unit_text(options, task_vars.get("ansible_managed", "Ansible managed")).encode()
    with open(CATALOG_SOURCE, "rb") as handle:
        files[contract.CATALOG] = handle.read()
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def run_with_agent(action, task_vars, module_name, args):
    """Run module_name on the host with the agent's files in its arguments; a failure names the host first."""
    host = task_vars.get("inventory_hostname", "the host")
    try:
        args = dict(args, agent=agent_options(args.get("agent")))
    except AnsibleActionFail as error:
        raise AnsibleActionFail(f"{host}: {error.message}") from None
    args["agent_files"] = agent_files(task_vars, args["agent"])
    result = action._execute_module(module_name=module_name, module_args=args, task_vars=task_vars)
    return host_named(host, result)


def host_named(host, result):
    if result.get("failed") and not str(result.get("msg", "")).startswith(host):
        result["msg"] = f"{host}: {result.get('msg')}"
    return result

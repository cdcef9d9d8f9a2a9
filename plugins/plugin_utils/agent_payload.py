# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the agent: its files as the host module receives them, in its arguments.

The agent's package (plugins/module_utils/bpfoomctl/, each module as
bpfoomctl/<module>.py) is read, the bpfoomctl shim written and the unit rendered
(bpfoom.service.j2 beside this file, with the agent options) here; they travel
base64-encoded inside the one module execution that converges the host
(plugins/module_utils/agent_host.py says where each goes).
"""

from __future__ import annotations

import base64
import os

from ansible.errors import AnsibleActionFail
from ansible.template import trust_as_template

from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import AGENT_OPTIONS, PACKAGE_PREFIX, SHIM, UNIT_NAME
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import contract

HERE = os.path.dirname(__file__)
PACKAGE_SOURCE = os.path.normpath(os.path.join(HERE, "..", "module_utils", "bpfoomctl"))
UNIT_TEMPLATE = os.path.join(HERE, "bpfoom.service.j2")
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


def agent_files(action, task_vars, options):
    """{file name: base64 content} of the agent, the unit rendered with Ansible's templar."""
    files = package_files()
    files[SHIM] = contract.SHIM_TEXT.encode()
    with open(UNIT_TEMPLATE) as handle:
        text = trust_as_template(handle.read())
    variables = dict(task_vars, ansible_managed=task_vars.get("ansible_managed", "Ansible managed"),
                     agent_oom_score_adj=options["oom_score_adj"], agent_restart_sec=options["restart_sec"],
                     agent_metrics_file=options["metrics_file"], bpfoom_command=contract.COMMAND,
                     bpfoom_state_dir=contract.STATE_DIR, bpfoom_bpffs=contract.BPFFS)
    templar = action._templar.copy_with_new_env(available_variables=variables)
    files[UNIT_NAME] = templar.template(text).encode()
    return {name: base64.b64encode(content).decode() for name, content in files.items()}


def run_with_agent(action, task_vars, module_name, args):
    """Run module_name on the host with the agent's files in its arguments; a failure names the host first."""
    host = task_vars.get("inventory_hostname", "the host")
    try:
        args = dict(args, agent=agent_options(args.get("agent")))
    except AnsibleActionFail as error:
        raise AnsibleActionFail(f"{host}: {error.message}") from None
    args["agent_files"] = agent_files(action, task_vars, args["agent"])
    return host_named(host, action._execute_module(module_name=module_name, module_args=args, task_vars=task_vars))


def host_named(host, result):
    if result.get("failed") and not str(result.get("msg", "")).startswith(host):
        result["msg"] = f"{host}: {result.get('msg')}"
    return result

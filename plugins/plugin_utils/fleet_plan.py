# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which policy each host runs and because of which group (group_policy), the fleet's plan with each distinct
policy once (fleet_plan), the hosts of each stage of a staged rollout (fleet_stage), and what each host of a
rollout's stage is applied (rollout_stage) or of a rollback (rollback_stage): the filters bpfoom.fleet.group_policy
(plugins/filter/group_policy.py), fleet_plan, fleet_stage, rollout_stage and rollback_stage (plugins/filter/fleet.py).

Everything a host needs is worked out here, once for the fleet, so that a rollout's host costs the controller
no template for its arguments: each host's task runs in a fresh worker of the controller, which compiles again
every Jinja expression it meets (18 of them cost a host of a rollout half its controller time), and a template
that indexes a dictionary of the fleet's hosts copies it (bpfoom.fleet.policy's arguments_from reads the plan
as it is instead).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping

import yaml

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

# The host variables of the agent role (roles/agent/defaults/main.yml) that shape a host's apply, by the apply's
# argument: the agent's options, and how libbpf is installed where it is missing.
AGENT_VARIABLES = {"oom_score_adj": "agent_oom_score_adj", "restart_sec": "agent_restart_sec",
                   "metrics_file": "agent_metrics_file"}


def _policy_map(group_policies):
    """bpfoom_group_policies as a dict: given as one, or as YAML text as an AWX survey gives it."""
    if isinstance(group_policies, str):
        try:
            group_policies = yaml.safe_load(group_policies) if group_policies.strip() else {}
        except yaml.YAMLError as error:
            raise AnsibleFilterError(f"bpfoom_group_policies is not valid YAML: {error}") from None
    group_policies = group_policies or {}
    if not isinstance(group_policies, dict):
        raise AnsibleFilterError("bpfoom_group_policies must map group names to policies, "
                                 f"got {type(group_policies).__name__}")
    return group_policies


def group_policy(group_policies, group_names, fallback=None, fallback_group=None):
    """{"group": ..., "policy": ...} for a host in group_names.

    group_policies maps a group to a policy spec (a dict, or YAML text as an AWX
    survey gives it); fallback is the host's own bpfoom_policy (group_vars),
    used when none of its groups is in the map.
    """
    group_policies = _policy_map(group_policies)
    matches = [(group, group_policies[group]) for group in group_names if group in group_policies]
    if len({json.dumps(policy, sort_keys=True, default=str) for _group, policy in matches}) > 1:
        raise AnsibleFilterError(f"the host is in groups {[g for g, _p in matches]} of bpfoom_group_policies "
                                 "with different policies: give it one")
    if matches:
        return {"group": matches[0][0], "policy": matches[0][1]}
    if fallback:
        return {"group": fallback_group or ",".join(group_names) or "ungrouped", "policy": fallback}
    return {"group": ",".join(group_names) or "ungrouped", "policy": None}


def _plain(value):
    """Ansible's lazy containers as plain dicts and lists (hashable as JSON, comparable)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def fleet_plan(hosts, hostvars, group_policies=None):
    """Which policy every host runs, and each distinct policy once, in one pass on the controller.

    {"hosts": {host: {"group": g, "policy": index or None, "agent": index}}, "policies": [policy, ...],
     "agents": [agent settings, ...], "without_policy": [host, ...]}: the build runs once per entry of
    "policies", and each host finds its build by its index, whatever the number of hosts; its agent settings
    (the agent role's variables, host_agent) likewise, each distinct one kept once.
    """
    plan = {"hosts": {}, "policies": [], "agents": [], "without_policy": []}
    seen, agents = {}, {}
    group_policies = _policy_map(group_policies)         # survey text parsed once, not once per host
    for host in hosts:
        variables = hostvars[host]
        try:
            wanted = group_policy(group_policies, list(variables.get("group_names", [])),
                                  _plain(variables.get("bpfoom_policy")), variables.get("bpfoom_group"))
        except AnsibleFilterError as error:
            raise AnsibleFilterError(f"{host}: {error.message}") from None
        index = None
        if wanted["policy"] is None:
            plan["without_policy"].append(host)
        else:
            policy = _plain(wanted["policy"])
            key = json.dumps(policy, sort_keys=True, default=str)
            if key not in seen:
                seen[key] = len(plan["policies"])
                plan["policies"].append(policy)
            index = seen[key]
        agent = host_agent(host, variables)
        agent_index = agents.setdefault(json.dumps(agent, sort_keys=True), len(plan["agents"]))
        if agent_index == len(plan["agents"]):
            plan["agents"].append(agent)
        plan["hosts"][host] = {"group": wanted["group"], "policy": index, "agent": agent_index}
    return plan


def host_agent(host, variables):
    """A host's agent settings, from the agent role's variables (None where unset: the agent's defaults)."""
    try:
        return {"agent": {option: _plain(variables.get(name)) for option, name in AGENT_VARIABLES.items()},
                "install_libbpf": boolean(_plain(variables.get("agent_manage_packages", True))),
                "libbpf_packages": _plain(variables.get("agent_packages")) or None}
    except TypeError as error:
        raise AnsibleFilterError(f"{host}: agent_manage_packages: {error}") from None


STAGES = ("all", "canary", "wave", "rest")


def fleet_stage(plan, stage="all", wave_percent=10, done=()):
    """The hosts of one stage of a staged rollout (the AWX workflow's canary, wave and rest nodes).

    Hosts keep the plan's order, the play's: the inventory's (AWX orders an inventory by name).
    canary: the first host of each distinct policy: every policy is proven before it spreads.
    wave: wave_percent % of the hosts not in `done` (rounded up), taken in turn from each policy, so
    each policy's exposure grows alike. rest: every planned host not in `done`. all: every planned host.
    `done` is the hosts earlier stages took (their artifacts): a sliced node sees only its slice of the
    inventory, so it cannot work out which hosts were the canaries; it is told.
    """
    if stage not in STAGES:
        raise AnsibleFilterError(f"bpfoom_stage must be one of {', '.join(STAGES)}, not {stage!r}")
    done = set(done or ())
    planned = [host for host, entry in plan["hosts"].items() if entry["policy"] is not None and host not in done]
    by_policy = {}
    for host in planned:
        by_policy.setdefault(plan["hosts"][host]["policy"], []).append(host)
    if stage == "canary":
        taken = {hosts[0] for hosts in by_policy.values()}
    elif stage == "wave":
        # One host of each policy in turn: the first of each, then the second of each...
        turns = [host for row in itertools.zip_longest(*by_policy.values()) for host in row if host is not None]
        taken = set(turns[:math.ceil(len(planned) * int(wave_percent) / 100)])
    else:
        taken = set(planned)
    return [host for host in planned if host in taken]


def rollout_stage(plan, builds, stage="all", wave_percent=10, done=(), canary_smoke=True, check_mode=False,
                  unpatched="fail", proven=None):
    """The hosts of a rollout's stage, its canaries, and the arguments of each host's apply (bpfoom.fleet.policy).

    {"hosts": [...], "canaries": [...], "apply_args": [arguments, ...], "apply_of": {host: index}}: hosts with
    the same policy and agent settings share one entry of apply_args (a canary has its own: its smoke test).
    builds: the results of bpfoom.fleet.policy_build, one per entry of the plan's policies. done: the hosts the
    workflow's earlier stages took (read by wave and rest). A canary smoke-tests its policy after its apply,
    unless canary_smoke is false or in check mode; a canary whose policy has no smoke section is refused.
    unpatched and proven: the apply's own arguments (what a host without the hook does; the policies the
    workflow's canary proved, None outside a workflow's wave and rest).
    """
    hosts = fleet_stage(plan, stage, wave_percent, done if stage in ("wave", "rest") else ())
    # A workflow's canary node smoke-tests every host it takes (one per policy); a whole rollout, its first host.
    canaries = hosts if stage == "canary" else hosts[:1] if stage == "all" else []
    if canary_smoke:
        for host in canaries:
            policy = plan["policies"][plan["hosts"][host]["policy"]]
            if "smoke" not in policy:
                raise AnsibleFilterError(
                    f"{host} is a canary and its policy {policy.get('name')} has no smoke section to prove it: add "
                    "one (docs/docsite/rst/operations.rst) or set bpfoom_canary_smoke=false")
    smoked = set(canaries) if canary_smoke and not check_mode else set()
    stage_plan = {"hosts": hosts, "canaries": canaries, "apply_args": [], "apply_of": {}}
    seen = {}
    for host in hosts:
        entry = plan["hosts"][host]
        key = (entry["policy"], entry["agent"], host if host in smoked else None)
        if key not in seen:
            seen[key] = len(stage_plan["apply_args"])
            stage_plan["apply_args"].append(_apply_args(plan, builds, entry, host in smoked, unpatched, proven))
        stage_plan["apply_of"][host] = seen[key]
    return stage_plan


def _apply_args(plan, builds, entry, smoke, unpatched, proven):
    policy, agent = plan["policies"][entry["policy"]], plan["agents"][entry["agent"]]
    args = {"build": builds[entry["policy"]], "mode": policy.get("mode", "enforce"), "unpatched": unpatched,
            "install_libbpf": agent["install_libbpf"], "agent": agent["agent"]}
    if agent["libbpf_packages"]:
        args["libbpf_packages"] = agent["libbpf_packages"]
    if proven is not None:
        args["proven_policies"] = proven
    if smoke:
        args["smoke"] = policy["smoke"]
    return args


def rollback_stage(plan, builds, hosts, rollback_from=None):
    """Each host's arguments of a rollback (bpfoom.fleet.policy's rollback_from), in rollout_stage's shape
    (apply_args, and each host's index in apply_of): the policy a host leaves is its group's current one (the hash
    of its policy's build), or rollback_from for every host. A host without a policy in the plan leaves nothing
    it was given: it is left out, and the apply names it."""
    if rollback_from:
        return {"apply_args": [{"rollback_from": rollback_from, "unpatched": "skip"}],
                "apply_of": {host: 0 for host in hosts}}
    apply_of = {}
    for host in hosts:
        policy = ((plan or {}).get("hosts") or {}).get(host, {}).get("policy")
        if policy is not None:
            apply_of[host] = policy
    return {"apply_args": [{"rollback_from": build["policy_hash"], "unpatched": "skip"} for build in builds],
            "apply_of": apply_of}

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.group_policy: which policy a host should run, and because of which group."""

from __future__ import annotations

import json

import yaml

from ansible.errors import AnsibleFilterError


def group_policy(group_policies, group_names, fallback=None, fallback_group=None):
    """{"group": ..., "policy": ...} for a host in group_names.

    group_policies maps a group to a policy spec (a dict, or YAML text as an AWX
    survey gives it); fallback is the host's own bpfoom_policy (group_vars),
    used when none of its groups is in the map.
    """
    if isinstance(group_policies, str):
        try:
            group_policies = yaml.safe_load(group_policies) if group_policies.strip() else {}
        except yaml.YAMLError as error:
            raise AnsibleFilterError(f"bpfoom_group_policies is not valid YAML: {error}") from None
    group_policies = group_policies or {}
    if not isinstance(group_policies, dict):
        raise AnsibleFilterError("bpfoom_group_policies must map group names to policies, "
                                 f"got {type(group_policies).__name__}")
    matches = [(group, group_policies[group]) for group in group_names if group in group_policies]
    if len({json.dumps(policy, sort_keys=True, default=str) for _group, policy in matches}) > 1:
        raise AnsibleFilterError(f"the host is in groups {[g for g, _p in matches]} of bpfoom_group_policies "
                                 "with different policies: give it one")
    if matches:
        return {"group": matches[0][0], "policy": matches[0][1]}
    if fallback:
        return {"group": fallback_group or ",".join(group_names) or "ungrouped", "policy": fallback}
    return {"group": ",".join(group_names) or "ungrouped", "policy": None}


class FilterModule:
    def filters(self):
        return {"group_policy": group_policy}

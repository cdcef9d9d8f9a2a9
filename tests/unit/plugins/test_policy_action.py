"""The policy action's arguments from a fleet plan (the rollout's apply)."""

import pytest

from ansible.errors import AnsibleActionFail
from ansible_collections.bpfoom.fleet.plugins.action.policy import ActionModule

STAGE = {"apply_args": [{"mode": "enforce"}, {"mode": "shadow", "smoke": {"limit_mib": 64}}],
         "apply_of": {"web1": 1, "web2": 0}, "hosts": ["web1", "web2"], "canaries": ["web1"]}


def test_a_host_takes_its_own_arguments_from_the_plan():
    assert ActionModule._planned_args("web2", "_stage", {"_stage": STAGE}) == {"mode": "enforce"}
    planned = ActionModule._planned_args("web1", "_stage", {"_stage": STAGE})
    planned["mode"] = "changed"                         # a copy: the plan other hosts read stays as it is
    assert STAGE["apply_args"][1]["mode"] == "shadow"


@pytest.mark.parametrize("task_vars", [{}, {"_stage": {"apply_args": [], "apply_of": {}}}, {"_stage": "text"}])
def test_a_host_outside_the_plan_is_named(task_vars):
    with pytest.raises(AnsibleActionFail, match="^db1: arguments_from=_stage: that variable holds no arguments"):
        ActionModule._planned_args("db1", "_stage", task_vars)

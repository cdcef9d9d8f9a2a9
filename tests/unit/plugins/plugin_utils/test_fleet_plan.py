"""Which policy a host runs: the group map (AWX survey) first, then its own bpfoom_policy."""

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.bpfoom.fleet.plugins.filter.aligned_table import aligned_table
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_plan import (
    fleet_plan, fleet_stage, group_policy, rollback_stage, rollout_stage)

WEB = {"name": "web", "template": "prefer_avoid"}
DB = {"name": "db", "template": "cgroup_priority"}


def test_a_mapped_group_wins_over_group_vars():
    assert group_policy({"web": WEB}, ["kernel_patched", "web"], DB, "db") == {"group": "web", "policy": WEB}


def test_group_vars_when_no_group_is_mapped():
    assert group_policy({}, ["web"], WEB, "web") == {"group": "web", "policy": WEB}
    assert group_policy(None, ["a", "b"], WEB) == {"group": "a,b", "policy": WEB}


def test_no_policy_at_all():
    assert group_policy({"db": DB}, ["web"]) == {"group": "web", "policy": None}


def test_survey_text_is_yaml():
    assert group_policy("web:\n  name: web\n  template: prefer_avoid\n", ["web"]) == {"group": "web", "policy": WEB}
    assert group_policy("  ", ["web"], DB) == {"group": "web", "policy": DB}


def test_two_groups_with_different_policies_are_refused():
    with pytest.raises(AnsibleFilterError, match="different policies"):
        group_policy({"web": WEB, "db": DB}, ["web", "db"])
    assert group_policy({"web": WEB, "also": dict(WEB)}, ["web", "also"])["policy"] == WEB


@pytest.mark.parametrize("bad", ["web: [unclosed", "- a list"])
def test_bad_survey_text_is_refused(bad):
    with pytest.raises(AnsibleFilterError, match="bpfoom_group_policies"):
        group_policy(bad, ["web"])


def test_fleet_plan_lists_each_distinct_policy_once():
    web, db = {"name": "web", "template": "prefer_avoid"}, {"name": "db", "template": "cgroup_priority"}
    hostvars = {f"web{i}": {"group_names": ["web"], "bpfoom_policy": dict(web)} for i in range(1, 201)}
    hostvars.update({"db1": {"group_names": ["db"], "bpfoom_policy": db}, "stray": {"group_names": []}})
    plan = fleet_plan(list(hostvars), hostvars, {"db": db})
    assert plan["policies"] == [web, db]
    assert plan["hosts"]["web7"] == {"group": "web", "policy": 0, "agent": 0}
    assert plan["hosts"]["db1"] == {"group": "db", "policy": 1, "agent": 0}
    assert plan["without_policy"] == ["stray"] and plan["hosts"]["stray"]["policy"] is None


def test_fleet_plan_keeps_each_distinct_agent_setting_once():
    hostvars = {f"web{i}": {"group_names": ["web"], "bpfoom_policy": WEB} for i in range(1, 4)}
    hostvars["web3"].update(agent_oom_score_adj=-500, agent_manage_packages="no", agent_packages=["libbpf"])
    plan = fleet_plan(list(hostvars), hostvars)
    assert [plan["hosts"][host]["agent"] for host in hostvars] == [0, 0, 1]
    assert plan["agents"] == [
        {"agent": {"oom_score_adj": None, "restart_sec": None, "metrics_file": None}, "install_libbpf": True,
         "libbpf_packages": None},
        {"agent": {"oom_score_adj": -500, "restart_sec": None, "metrics_file": None}, "install_libbpf": False,
         "libbpf_packages": ["libbpf"]}]


def test_fleet_plan_names_the_host_whose_agent_manage_packages_is_no_boolean():
    hostvars = {"web1": {"group_names": ["web"], "bpfoom_policy": WEB, "agent_manage_packages": "sometimes"}}
    with pytest.raises(AnsibleFilterError, match="^web1: agent_manage_packages"):
        fleet_plan(list(hostvars), hostvars)


def test_aligned_table_fits_the_widest_cell():
    lines = aligned_table([["a-very-long-host-name", "web,db"], ["h2", None]], ["HOST", "GROUP"])
    assert lines == ["HOST                   GROUP", "a-very-long-host-name  web,db", "h2                     -"]


def test_fleet_plan_names_the_host_in_two_groups_with_different_policies():
    hostvars = {"web1": {"group_names": ["web"]}, "both1": {"group_names": ["web", "db"]}}
    survey = "web: {name: web}\ndb: {name: db}\n"            # YAML text, as an AWX survey gives it
    with pytest.raises(AnsibleFilterError, match=r"^both1: the host is in groups \['web', 'db'\]"):
        fleet_plan(list(hostvars), hostvars, survey)


def _plan(*hosts):
    """A fleet_plan of (host, policy index or None), in the play's order."""
    return {"hosts": {host: {"group": "g", "policy": index} for host, index in hosts},
            "policies": [], "without_policy": []}


# In the play's (the inventory's) order: policy 0 first seen on web3.
FLEET = _plan(("web3", 0), ("db2", 1), ("web1", 0), ("spare1", None), ("web2", 0), ("db1", 1), ("web10", 0))


def test_the_canaries_are_the_first_host_of_each_policy_in_the_plays_order():
    assert fleet_stage(FLEET, "canary") == ["web3", "db2"]


def test_the_wave_rounds_up_and_takes_from_each_policy_in_turn():
    done = ["web3", "db2"]
    # 4 hosts left (web1, web2, db1, web10): 10 % is 0.4, rounded up to one host, the first policy's.
    assert fleet_stage(FLEET, "wave", 10, done) == ["web1"]
    assert fleet_stage(FLEET, "wave", 50, done) == ["web1", "db1"]
    assert fleet_stage(FLEET, "wave", 75, done) == ["web1", "web2", "db1"]
    assert fleet_stage(FLEET, "wave", 0, done) == []


def test_the_rest_is_every_planned_host_the_earlier_stages_did_not_take():
    assert fleet_stage(FLEET, "rest", done=["web3", "db2", "web1"]) == ["web2", "db1", "web10"]
    assert fleet_stage(FLEET, "all") == ["web3", "db2", "web1", "web2", "db1", "web10"]


def test_the_stages_of_a_workflow_cover_each_planned_host_once():
    canary = fleet_stage(FLEET, "canary")
    wave = fleet_stage(FLEET, "wave", 10, canary)
    rest = fleet_stage(FLEET, "rest", done=canary + wave)
    assert sorted(canary + wave + rest) == sorted(fleet_stage(FLEET, "all"))


def test_an_unknown_stage_is_refused():
    with pytest.raises(AnsibleFilterError, match="bpfoom_stage must be one of all, canary, wave, rest"):
        fleet_stage(FLEET, "waves")


SMOKED = {"name": "web", "template": "prefer_avoid", "smoke": {"processes": [], "expect_victim": "x", "limit_mib": 64}}
BUILDS = [{"policy_name": "web", "policy_hash": "aa"}, {"policy_name": "db", "policy_hash": "bb"}]


def _stage_plan():
    hostvars = {f"web{i}": {"group_names": ["web"], "bpfoom_policy": SMOKED} for i in range(1, 4)}
    hostvars.update({"db1": {"group_names": ["db"], "bpfoom_policy": dict(DB, mode="shadow")},
                     "db2": {"group_names": ["db"], "bpfoom_policy": dict(DB, mode="shadow"), "agent_restart_sec": 9}})
    return fleet_plan(list(hostvars), hostvars)


def test_a_rollout_stage_shares_each_distinct_apply_and_gives_the_canary_its_smoke_test():
    stage = rollout_stage(_stage_plan(), BUILDS, unpatched="shadow")
    assert stage["hosts"] == ["web1", "web2", "web3", "db1", "db2"] and stage["canaries"] == ["web1"]
    args = [stage["apply_args"][stage["apply_of"][host]] for host in stage["hosts"]]
    assert args[0]["smoke"] == SMOKED["smoke"] and "smoke" not in args[1]
    assert args[1] is args[2] and len(stage["apply_args"]) == 4       # web1 (smoke), web2-3, db1, db2 (its agent)
    assert args[3] == {"build": BUILDS[1], "mode": "shadow", "unpatched": "shadow", "install_libbpf": True,
                       "agent": {"oom_score_adj": None, "restart_sec": None, "metrics_file": None}}
    assert args[4]["agent"]["restart_sec"] == 9


def test_a_rollout_stage_in_check_mode_or_without_canary_smoke_runs_no_smoke_test():
    for stage in (rollout_stage(_stage_plan(), BUILDS, check_mode=True),
                  rollout_stage(_stage_plan(), BUILDS, canary_smoke=False)):
        assert stage["canaries"] == ["web1"]
        assert not any("smoke" in args for args in stage["apply_args"])


def test_a_workflow_stage_smoke_tests_every_canary_and_passes_what_its_canary_proved():
    canary = rollout_stage(_stage_plan(), BUILDS, "canary", canary_smoke=False)
    assert canary["hosts"] == canary["canaries"] == ["web1", "db1"]
    rest = rollout_stage(_stage_plan(), BUILDS, "rest", done=["web1", "db1"], proven={"aa": "web"})
    assert rest["hosts"] == ["web2", "web3", "db2"] and rest["canaries"] == []
    assert all(args["proven_policies"] == {"aa": "web"} for args in rest["apply_args"])
    # done is what the earlier stages took: it means nothing to a whole rollout.
    assert rollout_stage(_stage_plan(), BUILDS, "all", done=["web1"])["hosts"][0] == "web1"


def test_a_canary_whose_policy_has_no_smoke_section_is_refused():
    with pytest.raises(AnsibleFilterError, match="^db1 is a canary and its policy db has no smoke section"):
        rollout_stage(_stage_plan(), BUILDS, "canary")


def test_a_rollback_leaves_each_hosts_current_policy_or_the_one_named():
    plan = _stage_plan()
    leaves = rollback_stage(plan, BUILDS, ["web1", "db2", "stray"])
    assert leaves["apply_args"] == [{"rollback_from": "aa", "unpatched": "skip"},
                                    {"rollback_from": "bb", "unpatched": "skip"}]
    assert leaves["apply_of"] == {"web1": 0, "db2": 1}          # stray has no policy: the apply names it
    named = rollback_stage({}, [], ["web1", "db2"], "cc" * 32)
    assert named == {"apply_args": [{"rollback_from": "cc" * 32, "unpatched": "skip"}],
                     "apply_of": {"web1": 0, "db2": 0}}

"""Which policy a host runs: the group map (AWX survey) first, then its own bpfoom_policy."""

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.bpfoom.fleet.plugins.filter.aligned_table import aligned_table
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_plan import fleet_plan, fleet_stage, group_policy

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
    assert plan["hosts"]["web7"] == {"group": "web", "policy": 0}
    assert plan["hosts"]["db1"] == {"group": "db", "policy": 1}
    assert plan["without_policy"] == ["stray"] and plan["hosts"]["stray"]["policy"] is None


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

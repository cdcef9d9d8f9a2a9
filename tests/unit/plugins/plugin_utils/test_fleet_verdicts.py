"""verify's verdicts and the rollout's detail, from the modules' results (what verify.yml and rollout.yml print)."""

import pytest

from ansible_collections.bpfoom.fleet.plugins.module_utils.host_mode import mode_on_host
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_verdicts import verify_fleet, verify_host
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_report import rollout_detail

BUILD = {"policy_name": "web", "policy_hash": "a" * 64}
RUNS_WEB = {"hook": True, "kernel_release": "6.12",
            "attached_policy": {"policy_name": "web", "policy_hash": "a" * 64, "mode": "enforce"}}


@pytest.mark.parametrize("mode, hook, unpatched, runs", [
    ("enforce", True, "fail", "enforce"), ("shadow", False, "fail", "shadow"), ("enforce", False, "shadow", "shadow"),
    ("enforce", False, "skip", None), ("enforce", False, "fail", None), (None, True, "fail", "enforce"),
])
def test_one_rule_says_which_mode_a_host_runs(mode, hook, unpatched, runs):
    assert mode_on_host(mode, hook, unpatched) == runs


def test_a_host_on_its_policy_passes_and_its_row_names_the_victim():
    info = dict(RUNS_WEB, explain={"would_kill": {"comm": "hog", "pid": 7}, "agrees": False,
                                   "kernel_would_kill": {"comm": "db", "pid": 9}})
    verified = verify_host(info, "web1", "web", BUILD)
    assert verified["mismatch"] is None and verified["verdict"]["attached"]
    assert verified["row"] == ["web1", "web", "yes", "web", "a" * 12, "enforce", "yes", "hog[7] (kernel: db[9])", "-"]


def test_a_host_on_another_policy_fails_naming_both():
    info = dict(RUNS_WEB, attached_policy=None)
    verified = verify_host(info, "web1", "web", BUILD)
    assert verified["mismatch"] == f"web1 runs no policy, its group web should run web ({'a' * 12})"
    assert verified["row"][6] == "NO"


def test_a_host_without_the_hook_is_expected_in_shadow_mode_only_when_asked():
    info = {"hook": False, "attached_policy": None, "explain_error": "no policy runs here: give the directory"}
    skipped = verify_host(info, "old1", "web", BUILD, unpatched="skip")
    assert skipped["mismatch"] is None and skipped["row"][6] == "no hook" and skipped["row"][7].startswith("? no policy")
    failed = verify_host(info, "old1", "web", BUILD)
    assert failed["mismatch"].endswith(": its kernel has no BPF OOM hook")
    shadow = verify_host(info, "old1", "web", BUILD, unpatched="shadow")
    assert shadow["verdict"]["expected_mode"] == "shadow" and shadow["mismatch"] == (
        f"old1 runs no policy (None), its group web should run web ({'a' * 12}, shadow)")


def test_a_policy_the_canary_did_not_prove_is_named():
    verified = verify_host(RUNS_WEB, "web1", "web", BUILD, proven={"b" * 64: "web_v1"})
    assert "which is not a policy this workflow's canary proved (web_v1)" in verified["unproven"]
    assert verify_host(RUNS_WEB, "web1", "web", BUILD, proven={"a" * 64: "web"})["unproven"] is None


@pytest.mark.parametrize("result, check, detail", [
    ({"mode": None, "kernel_release": "6.1"}, False, ("skipped", "kernel 6.1 has no BPF OOM hook")),
    ({"mode": "enforce", "policy_hash": "a", "previous": None}, False, ("done", "replaces no policy")),
    ({"mode": "shadow", "policy_hash": "a", "previous": {"policy_hash": "a", "mode": "enforce"}}, True,
     ("would apply", "switches to shadow mode, in shadow mode")),
    ({"mode": "enforce", "policy_hash": "a", "changed": True, "previous": {"policy_hash": "a", "mode": "enforce"},
      "input_problems": ["x.service is not running"]}, False,
     ("done", "already running (agent updated); WARNING: x.service is not running")),
])
def test_the_rollout_detail_says_what_changed(result, check, detail):
    assert rollout_detail(result, check) == detail


def test_the_fleet_is_verified_in_one_pass_and_each_host_fails_for_its_first_reason():
    plan = {"hosts": {"web1": {"group": "web", "policy": 0}, "web2": {"group": "web", "policy": 0},
                      "gone": {"group": "web", "policy": 0}},
            "policies": [{"name": "web", "smoke": {"expect_victim": "hog"}}]}
    typo = dict(RUNS_WEB, input_problems=["ngnix.service: no such unit"])
    hostvars = {"web1": {"_bpfoom_info": typo, "_bpfoom_smoke": {"victim": "hog"}},
                "web2": {"_bpfoom_info": dict(RUNS_WEB, attached_policy=None)},
                "gone": {"_bpfoom_info": {"unreachable": True}}}
    verified = verify_fleet(plan, hostvars, [BUILD])
    assert [row[0] for row in verified["rows"]] == ["web1", "web2"]          # a host not read has no row
    assert verified["rows"][0][8] == "hog (expected hog)"
    assert verified["warnings"] == ["[WARNING] web1: policy web: ngnix.service: no such unit"]
    assert verified["failures"] == {"web2": f"web2 runs no policy, its group web should run web ({'a' * 12})"}
    strict = verify_fleet(plan, hostvars, [BUILD], fail_on_input_problems=True, fail_on_mismatch=False)
    assert strict["warnings"] == [] and strict["failures"] == {"web1": "web1: policy web: ngnix.service: no such unit"}

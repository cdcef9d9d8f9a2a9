"""policy_smoke: bad process lists are refused before anything runs; outcomes become verdicts.

The scenario itself (cgroups, the kernel's OOM) runs on lab hosts only
(tests/kernel); here oom_smoke.run is replaced to check the module's logic.
"""

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.bpfoom.fleet.plugins.modules import policy_smoke

PROCESSES = [{"name": "web-server", "mib": 64}, {"name": "report-gen", "mib": 16}, {"name": "trigger", "mib": 40}]


def run_module(capsys, monkeypatch, args, outcome=None):
    calls = []

    def fake_run(processes, limit_mib, timeout):
        calls.append(processes)
        return dict({"cgroup": "/bpfoom-smoke-1", "victim": None, "killed": [], "timed_out": False, "reports": [],
                     "policy_names": [], "no_victim": False, "kill_lines": []}, **(outcome or {}))

    monkeypatch.setattr(policy_smoke.oom_smoke, "run", fake_run)
    with patch_module_args(args), pytest.raises(SystemExit):
        policy_smoke.main()
    return json.loads(capsys.readouterr().out), calls


@pytest.mark.parametrize("processes, expect, message", [
    (PROCESSES[:1], None, "two at least"),
    (PROCESSES + [{"name": "trigger", "mib": 1}], None, "unique"),
    ([{"name": "a-very-long-process-name", "mib": 1}] + PROCESSES, None, "1 to 15 characters"),
    ([{"name": "a", "mib": 0}] + PROCESSES, None, "must be positive"),
    ([{"name": "a", "mib": 1, "cgroup": "../escape"}] + PROCESSES, None, "one plain cgroup name"),
    (PROCESSES, "nobody", "none of the processes"),
])
def test_bad_input_is_refused_before_anything_runs(capsys, monkeypatch, processes, expect, message):
    result, calls = run_module(capsys, monkeypatch, {"processes": processes, "limit_mib": 128, "expect_victim": expect})
    assert result["failed"] and message in result["msg"], result
    assert calls == []


def test_check_mode_runs_nothing(capsys, monkeypatch):
    result, calls = run_module(capsys, monkeypatch, {"processes": PROCESSES, "limit_mib": 128, "_ansible_check_mode": True})
    assert result["ran"] is False and "skipped" not in result and not result["changed"] and calls == []


def test_the_expected_victim_and_name_pass(capsys, monkeypatch):
    outcome = {"victim": "report-gen", "killed": ["report-gen"], "reports": ["trigger invoked oom-killer: ..."],
               "policy_names": ["web"]}
    result, _calls = run_module(capsys, monkeypatch, {"processes": PROCESSES, "limit_mib": 128,
                                                      "expect_victim": "report-gen", "expect_policy_name": "web"}, outcome)
    assert not result.get("failed") and result["as_expected"] and result["victim"] == "report-gen", result


@pytest.mark.parametrize("outcome, message", [
    ({"victim": "web-server", "killed": ["web-server"], "reports": ["x"], "policy_names": ["web"]},
     "the kernel killed web-server, the policy should have picked report-gen"),
    ({"victim": "report-gen", "killed": ["report-gen"], "reports": ["x"], "policy_names": ["default"]},
     "the OOM report says policy_name=default, expected web"),
    ({"timed_out": True}, "no OOM happened within 60 s"),
    ({"victim": "trigger", "killed": ["report-gen", "trigger"], "reports": ["x", "y"], "policy_names": ["web", "web"]},
     "the kernel killed trigger, the policy should have picked report-gen"),
])
def test_an_unexpected_outcome_fails_and_says_why(capsys, monkeypatch, outcome, message):
    result, _calls = run_module(capsys, monkeypatch, {"processes": PROCESSES, "limit_mib": 128,
                                                      "expect_victim": "report-gen", "expect_policy_name": "web"}, outcome)
    assert result["failed"] and message in result["msg"] and not result["as_expected"], result


def test_a_second_oom_after_the_expected_victim_is_a_warning(capsys, monkeypatch):
    """The first OOM is the policy's choice; a second one (oom_smoke.SECOND_OOM_RACE) is only reported."""
    outcome = {"victim": "report-gen", "killed": ["report-gen", "web-server"], "reports": ["x", "y"],
               "policy_names": ["web", "web"]}
    warnings = []
    # Recorded here: where controller code was imported (other tests), module warnings go to the display.
    monkeypatch.setattr(policy_smoke.AnsibleModule, "warn", lambda _module, warning: warnings.append(warning))
    result, _calls = run_module(capsys, monkeypatch, {"processes": PROCESSES, "limit_mib": 128,
                                                      "expect_victim": "report-gen", "expect_policy_name": "web"}, outcome)
    assert not result.get("failed") and result["as_expected"] and result["victim"] == "report-gen", result
    assert len(warnings) == 1 and "killed ['web-server'] too" in warnings[0], warnings

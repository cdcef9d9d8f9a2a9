"""Unit tests of the rollout's settings: each refusal names the setting and what is allowed."""

from __future__ import annotations

import pytest

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import rollout_settings
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_settings import SettingError, check


def test_the_defaults_and_good_values_pass_normalized():
    assert check({}) == {}
    assert check({"batches": "1,10%,100%"}) == {"batches": [1, "10%", "100%"]}
    assert check({"batches": [1, "25%", 100], "wave_percent": "10", "max_fail_percentage": 0}) == {
        "batches": [1, "25%", 100], "wave_percent": 10, "max_fail_percentage": 0}
    assert check({"rollback_from": "ab" * 32}) == {"rollback_from": "ab" * 32}


@pytest.mark.parametrize("value", ["0", [0], [1, "0%"], "1,,100%", [1, "101%"], ["-1"], [True], [], "x", [1.5]])
def test_a_batch_that_is_not_a_positive_count_or_percentage_is_refused(value):
    with pytest.raises(SettingError, match=r"^bpfoom_batches(\[\d+\])? is .*(from 1|batch sizes)"):
        check({"batches": value})


@pytest.mark.parametrize("value", [-5, 0, 101, "ten", True])
def test_the_wave_percentage_is_1_to_100(value):
    with pytest.raises(SettingError, match=r"^bpfoom_wave_percent is .*from 1 to 100$"):
        check({"wave_percent": value})


@pytest.mark.parametrize("value", [-1, 101, "all"])
def test_the_failure_tolerance_is_0_to_100(value):
    with pytest.raises(SettingError, match=r"^bpfoom_max_fail_percentage is .*from 0 to 100$"):
        check({"max_fail_percentage": value})


@pytest.mark.parametrize("value", ["abc", "AB" * 32, "ab" * 31, "ab" * 32 + "0", 12])
def test_a_rollback_hash_has_policy_infos_form(value):
    with pytest.raises(SettingError, match="^bpfoom_rollback_from is .*policy_info.*64 lower-case hexadecimal"):
        check({"rollback_from": value})


def test_unpatched_hosts_is_one_of_three():
    with pytest.raises(SettingError, match="^bpfoom_unpatched_hosts is 'ignore': give fail, skip or shadow$"):
        check({"unpatched_hosts": "ignore"})


def test_a_rollout_without_its_report_callback_is_warned_about():
    assert rollout_settings.warnings({"callbacks_enabled": ["bpfoom.fleet.rollout_report", "profile_tasks"]}) == []
    assert rollout_settings.warnings({}) == []           # the rollback: no callback to ask for
    [warning] = rollout_settings.warnings({"callbacks_enabled": []})
    assert warning.startswith("The callback bpfoom.fleet.rollout_report is not enabled: if this rollout is interrupted")

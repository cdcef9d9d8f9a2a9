"""Unit tests of the rollout's report: one row per host from what the playbook or the callback noted."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_report import (
    entries, host_entry, report, rollback_report, unread)

APPLIED = {"changed": True, "hook": True, "kernel_release": "6.12.117-bpfoom", "policy_name": "web",
           "policy_hash": "ab" * 32}
NO_HOOK = {"changed": False, "hook": False, "kernel_release": "6.12.117-unpatched", "policy_name": None,
           "policy_hash": None}
# policy_info's shape: the running policy under attached_policy.
READ = {"hook": True, "kernel_release": "6.12.117-bpfoom",
        "attached_policy": {"policy_name": "old", "policy_hash": "cd" * 32}}


def test_each_outcome_gets_a_row_with_what_the_kernel_runs_now():
    result = report([
        {"host": "a", "group": "web", "outcome": "done", "detail": "replaces old", "kernel": APPLIED},
        {"host": "b", "group": "legacy", "outcome": "skipped", "detail": "no hook", "kernel": NO_HOOK},
        {"host": "c", "group": "web", "outcome": "failed", "step": "Provoke a contained memcg OOM",
         "detail": "smoke test\n  failed", "kernel": READ},
        {"host": "d", "group": "web", "outcome": "unreachable", "step": "Apply the policy",
         "detail": "ssh: connect", "kernel": {"unreachable": True, "msg": "ssh"}},
        {"host": "e", "group": "web", "outcome": "not reached", "kernel": {"skipped": True}},
    ])
    rows = {row["host"]: row for row in result["rows"]}
    assert rows["a"]["runs_now"] == "web" and rows["a"]["policy_hash"] == "ab" * 32 and rows["a"]["kernel_read"]
    assert rows["b"]["runs_now"] == "none (no hook)"
    assert rows["c"]["runs_now"] == "old" and rows["c"]["detail"] == "smoke test failed"   # one line in a table
    assert rows["d"]["runs_now"] == "unknown (not read)" and not rows["d"]["kernel_read"]
    assert rows["e"]["runs_now"] == "unknown (not read)" and rows["e"]["step"] is None
    assert result["failed"] == ["c", "d"]
    assert result["summary"] == "1 done, 1 skipped, 1 failed, 1 unreachable, 1 not reached"
    assert result["table"][0].split()[:2] == ["HOST", "GROUP"]
    assert len(result["table"]) == 6          # the header and one line per host


def test_a_hooked_kernel_without_a_policy_runs_none():
    result = report([{"host": "a", "outcome": "not reached",
                      "kernel": {"hook": True, "kernel_release": "6.12", "attached_policy": None}}])
    assert result["rows"][0]["runs_now"] == "none"


def test_an_interrupted_report_says_so_and_fails_the_interrupted_hosts():
    result = report([{"host": "a", "outcome": "done", "kernel": APPLIED},
                     {"host": "b", "outcome": "interrupted", "step": "Apply the policy"}], interrupted=True)
    assert result["summary"].startswith("INTERRUPTED: 1 done, 1 interrupted; ")
    assert result["failed"] == ["b"]


def test_check_mode_reports_what_the_kernel_runs_not_what_it_would():
    predicted = dict(APPLIED, policy_name="web_next", previous={"policy_name": "web", "policy_hash": "ab" * 32})
    row = report([{"host": "a", "outcome": "would apply", "kernel": predicted}])["rows"][0]
    assert row["runs_now"] == "web" and row["policy_hash"] == "ab" * 32
    fresh = dict(APPLIED, previous=None)
    assert report([{"host": "a", "outcome": "would apply", "kernel": fresh}])["rows"][0]["runs_now"] == "none"


# What the rollout registers on each host is all the report is made of (plugin_utils/rollout_report.NOTED).
APPLIED_DONE = dict(APPLIED, mode="enforce", previous={"policy_name": "old", "policy_hash": "cd" * 32})


def test_a_host_entry_comes_from_what_the_rollout_registered():
    smoked = dict(APPLIED_DONE, smoke={"victim": "hog"})       # a canary: its smoke test is in its apply's result
    done = host_entry("a", "web", {"_bpfoom_applied": smoked})
    assert (done["outcome"], done["detail"], done["kernel"]) == ("done", "replaces old, canary smoke victim hog", smoked)
    failure = {"outcome": "failed", "step": "Provoke a contained memcg OOM", "detail": "wrong victim"}
    failed = host_entry("a", "web", {"_bpfoom_applied": APPLIED_DONE, "_bpfoom_failure": failure, "_bpfoom_read": READ})
    assert (failed["outcome"], failed["step"], failed["kernel"]) == ("failed", failure["step"], READ)
    never = host_entry("b", "web", {}, stopped_by="a")
    assert (never["outcome"], never["detail"]) == ("not reached", "the rollout stopped after a failed")
    assert never["kernel"] is None
    assert host_entry("b", "web", {})["detail"] is None
    assert host_entry("a", "web", {"_bpfoom_applied": APPLIED_DONE}, check_mode=True)["outcome"] == "would apply"


def test_entries_read_each_host_once_and_name_the_hosts_not_read():
    unreachable = {"outcome": "unreachable", "step": "Apply", "detail": "ssh"}
    hostvars = {"a": {"_bpfoom_applied": APPLIED_DONE}, "b": {"_bpfoom_failure": unreachable}, "c": {}}
    plan = {"hosts": {"a": {"group": "web", "policy": 0}, "b": {"group": "db", "policy": 1}, "c": {"group": "web"}}}
    found = entries(["a", "b", "c"], hostvars, plan)
    assert [(entry["host"], entry["group"], entry["outcome"]) for entry in found] == \
        [("a", "web", "done"), ("b", "db", "unreachable"), ("c", "web", "not reached")]
    assert unread(found) == ["b", "c"]
    result = report(found)
    assert result["failed"] == ["b"] and result["failures"] == {"b": 'unreachable at "Apply": ssh'}


def test_the_rollback_report_says_what_runs_now_or_why_not():
    back = {"changed": True, "previous": {"policy_name": "web_next"}, "policy_name": "web", "policy_hash": "ab" * 32}
    result = rollback_report({
        "a": back, "b": dict(back, changed=False),
        "c": {"changed": False, "previous": None, "policy_name": None, "policy_hash": None},
        "d": {"failed": True, "msg": "d: no policy\n ran before web"}, "e": {"unreachable": True, "msg": "ssh"},
        "f": None}, stopped_by="d")
    assert result["lines"] == [
        "a: web_next -> web (abababababab)", "b: web_next -> web (abababababab), unchanged",
        "c: no policy -> no policy (-), unchanged", "d: not taken back: d: no policy ran before web",
        "e: not taken back: ssh", "f: not reached: the rollback stopped after d failed"]
    assert list(result["failures"]) == ["d", "e", "f"]

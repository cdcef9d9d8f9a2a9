"""Unit tests of what bpfoomctl writes to the journal, of the kernel's info types it reads, of its metrics and of
explain's ranking."""

import os

import pytest

from bpfoomctl import abi, explain, journal, kernel, metrics  # noqa: E402


def parse_native(payload: bytes) -> dict:
    """journald's parser of the native protocol: NAME=value lines, or NAME\\n + length + value + \\n."""
    fields, rest = {}, payload
    while rest:
        line, _newline, after = rest.partition(b"\n")
        if b"=" in line:
            name, _equals, value = line.partition(b"=")
            fields[name.decode()], rest = value, after
        else:
            size = int.from_bytes(after[:8], "little")
            fields[line.decode()], rest = after[8:8 + size], after[8 + size + 1:]
    return fields


def test_a_chosen_process_name_cannot_forge_a_field_or_cut_the_message():
    comm = "x\nPRIORITY=0\nMESSAGE=forged"
    payload = journal.journal_payload({"MESSAGE": f"selected {journal.printable(comm)}[7]", "PRIORITY": 5,
                                       "BPFOOM_VICTIM_COMM": comm})
    fields = parse_native(payload)
    assert fields == {"MESSAGE": b"selected x\\nPRIORITY=0\\nMESSAGE=forged[7]", "PRIORITY": b"5",
                      "BPFOOM_VICTIM_COMM": comm.encode()}


def test_every_kind_of_entry_has_its_own_message_id():
    ids = list(journal.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)     # 128 bits, hex, as journald wants


@pytest.mark.parametrize("structure, field, offset", [
    # Offsets of linux/bpf.h (UAPI, stable): bpf_prog_info, bpf_map_info, bpf_link_info's tracing member.
    (abi.ProgInfo, "tag", 8), (abi.ProgInfo, "nr_map_ids", 52), (abi.ProgInfo, "map_ids", 56),
    (abi.ProgInfo, "name", 64), (abi.MapInfo, "value_size", 12), (abi.MapInfo, "name", 24),
    (abi.LinkInfo, "prog_id", 8), (abi.LinkInfo, "attach_type", 16),
    (abi.LinkInfo, "target_btf_id", 24),
])
def test_the_kernel_info_types_have_the_uapi_offsets(structure, field, offset):
    assert getattr(structure, field).offset == offset


def test_metrics_name_the_attached_policy_and_escape_its_labels(tmp_path):
    view = {"attached_policy": {"policy_name": 'we"b', "policy_hash": "ab" * 32, "mode": "enforce"},
            "policies": [{"attached": True, "evaluations": 12, "selections": 1}]}
    text = metrics.metrics_text(view, True, 3, 1700000000.4, desired=True)
    assert "\nbpfoom_metrics_updated_timestamp_seconds 1700000000\n" in text and "bpfoom_agent_up" not in text
    assert "\nbpfoom_policy_desired 1\n" in text
    assert f'bpfoom_policy_info{{policy_name="we\\"b",policy_hash="{"ab" * 32}",mode="enforce"}} 1' in text
    assert "\nbpfoom_policy_evaluations_total 12\n" in text and "\nbpfoom_events_logged_total 3\n" in text
    assert "shadow_outcomes" not in text
    none = metrics.metrics_text({"attached_policy": None, "policies": []}, False, 0, 1700000000)
    assert "bpfoom_policy_attached 0" in none and "bpfoom_hook_present 0" in none and "policy_info" not in none
    assert "\nbpfoom_policy_desired 0\n" in none                 # detached on purpose: nothing to alert on
    path = tmp_path / "bpfoom.prom"
    assert metrics.write_metrics(str(path), text) and path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpfoom.prom"]            # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not metrics.write_metrics(str(tmp_path / "missing" / "bpfoom.prom"), text)


def test_shadow_metrics_count_each_outcome():
    view = {"attached_policy": {"policy_name": "web", "policy_hash": "ab" * 32, "mode": "shadow"},
            "policies": [{"attached": True, "evaluations": 9, "selections": 2, "ooms": 3, "shadow_agree": 1,
                          "shadow_disagree": 1, "shadow_no_victim": 0, "shadow_not_comparable": 1}]}
    text = metrics.metrics_text(view, False, 3, 1700000000)
    assert 'mode="shadow"} 1' in text and "\nbpfoom_ooms_total 3\n" in text
    for outcome, count in (("agree", 1), ("disagree", 1), ("no_victim", 0), ("not_comparable", 1)):
        assert f'\nbpfoom_shadow_outcomes_total{{outcome="{outcome}"}} {count}\n' in text


def shadow_record(**fields):
    record = abi.ShadowRecord(**fields)
    return record


POLICY = {"policy_name": "web", "policy_hash": "ab" * 32, "mode": "shadow"}


def test_a_shadow_entry_names_both_choices():
    record = shadow_record(outcome=2, memcg=1, candidates=3, policy_pid=123, policy_comm=b"report-gen",
                           kernel_pid=456, kernel_comm=b"web-server", policy_basis=abi.Basis(matched=1, uid=33))
    kind, fields = journal.shadow_entry(record, POLICY)
    assert kind == "shadow" and fields["BPFOOM_OUTCOME"] == "disagree" and fields["BPFOOM_OOM"] == "memcg"
    assert fields["MESSAGE"] == ("bpfoom policy web (shadow) would have killed report-gen[123]; "
                                 "the kernel killed web-server[456]; the policy's rank rested on comm "
                                 "(chosen by the process); uid 33")
    assert fields["BPFOOM_POLICY_VICTIM_MATCHED"] == "comm" and fields["BPFOOM_POLICY_VICTIM_UID"] == 33


def test_an_entry_names_the_cgroup_a_decision_rested_on_and_its_owner():
    basis = abi.Basis(matched=2, uid=1001, cgroup_id=77, cgroup_owner=1001, cgroup_vouched=0)
    view = journal.basis_view(basis, {77: "/user.slice/user-1001.slice/user@1001.service/app.slice/x.service"})
    assert view == {"matched": ["cgroup"], "uid": 1001, "cgroup_owner": 1001, "cgroup_vouched": False,
                    "cgroup": "/user.slice/user-1001.slice/user@1001.service/app.slice/x.service"}
    assert "(owner uid 1001, not vouched for: may not protect)" in journal.basis_text(view)


def test_a_cgroup_removed_before_its_entry_is_written_is_still_named(tmp_path):
    """systemd removes the cgroup of a unit whose process the OOM killer took, racing the agent's entry."""
    def descendants(count):
        (tmp_path / "cgroup.stat").write_text(f"nr_descendants {count}\nnr_dying_descendants 0\n")
    descendants(0)
    cgroups = kernel.CgroupPaths(str(tmp_path))
    cgroups.follow()
    unit = tmp_path / "user.slice" / "app.slice" / "postgresql.service"
    unit.mkdir(parents=True)
    unit_id = unit.stat().st_ino
    descendants(3)
    cgroups.follow()                     # a turn of the events loop while the unit runs: the count changed
    for directory in (unit, unit.parent, unit.parent.parent):
        directory.rmdir()                # the OOM, then the unit's removal, then the entry
    descendants(0)
    view = journal.basis_view(abi.Basis(matched=2, uid=1001, cgroup_id=unit_id, cgroup_owner=1001), cgroups)
    assert view["cgroup"] == "/user.slice/app.slice/postgresql.service"
    assert cgroups.get(12345678, "cgroup id 12345678") == "cgroup id 12345678"    # never seen: said so
    cgroups.follow()
    cgroups.follow()                     # two walks later, a removed cgroup is forgotten
    assert cgroups.get(unit_id) is None


def test_a_shadow_entry_says_when_it_cannot_compare_or_would_find_no_victim():
    _kind, origin = journal.shadow_entry(shadow_record(outcome=4, kernel_pid=9, kernel_comm=b"dd"), POLICY)
    assert origin["BPFOOM_OUTCOME"] == "not_comparable" and "oom_task_origin" in origin["MESSAGE"]
    _kind, none = journal.shadow_entry(shadow_record(outcome=3, kernel_pid=9, kernel_comm=b"dd"), POLICY)
    assert none["BPFOOM_OUTCOME"] == "no_victim" and none["PRIORITY"] == 3 and "no victim" in none["MESSAGE"]


def test_a_victim_name_with_a_newline_makes_one_well_formed_shadow_entry():
    record = shadow_record(outcome=2, policy_pid=1, policy_comm=b"x\nPRIORITY=0", kernel_pid=2, kernel_comm=b"k")
    kind, fields = journal.shadow_entry(record, POLICY)
    parsed = parse_native(journal.journal_payload(dict(fields, MESSAGE_ID=journal.MESSAGE_IDS[kind])))
    assert set(parsed) == set(fields) | {"MESSAGE_ID"}
    assert parsed["BPFOOM_POLICY_VICTIM_COMM"] == b"x\nPRIORITY=0" and parsed["PRIORITY"] == b"4"
    assert b"\n" not in parsed["MESSAGE"]


def candidate(pid, rank, start, adj=0, cgroup_id=1, comm=b"t"):
    return abi.Candidate(pid=pid, rank=rank, start_time=start, oom_score_adj=adj, cgroup_id=cgroup_id, comm=comm)


@pytest.fixture
def oom_scores(monkeypatch):
    scores = {}
    monkeypatch.setattr(explain, "_oom_score", scores.get)
    return scores


def test_explain_orders_by_rank_then_tie_breaker_and_names_the_kernels_choice(oom_scores):
    oom_scores.update({1: 900, 2: 700, 3: 800, 4: 0, 5: 950})
    tasks = [candidate(1, 1, 10), candidate(2, 2, 20), candidate(3, 2, 30), candidate(4, 5, 5, adj=-1000),
             candidate(5, -1, 1)]
    ranked, kernel = explain.rank_candidates(tasks, "youngest")
    assert [t["pid"] for t in ranked] == [3, 2, 1, 5]       # -1000 never; NEVER last in a global OOM
    assert kernel["pid"] == 5 and ranked[-1]["rank"] == "never"
    ranked, _kernel = explain.rank_candidates(tasks, "kernel")
    assert [t["pid"] for t in ranked][:2] == [3, 2]          # equal ranks: the higher oom_score


def test_explain_for_a_memcg_oom_keeps_its_tasks_and_skips_never(oom_scores):
    oom_scores.update({1: 900, 2: 700, 3: 800})
    paths = {1: "/", 7: "/batch.slice", 8: "/batch.slice/job.scope"}
    tasks = [candidate(1, 1, 10, cgroup_id=1), candidate(2, 0, 20, cgroup_id=8), candidate(3, -1, 30, cgroup_id=7)]
    ranked, kernel = explain.rank_candidates(tasks, "kernel", memcg="/batch.slice", paths=paths)
    assert [t["pid"] for t in ranked] == [2] and ranked[0]["cgroup"] == "/batch.slice/job.scope"
    assert kernel["pid"] == 3                                # the kernel knows nothing of NEVER


def test_explain_leaves_out_itself_and_the_chain_that_ran_it(oom_scores):
    """On a quiet host the module's own interpreter would otherwise be the policy's victim (verify's WOULD KILL NOW)."""
    chain = explain.observers()
    assert chain[0] == os.getpid() and os.getppid() in chain and 1 not in chain
    oom_scores.update({chain[0]: 999, 4242: 10})
    ranked, kernel = explain.rank_candidates([candidate(chain[0], 5, 1), candidate(4242, 1, 2)], "kernel",
                                             left_out=chain)
    assert [t["pid"] for t in ranked] == [4242] and kernel["pid"] == 4242


def test_the_journal_catalog_explains_every_message_id_the_agent_writes():
    import re
    from pathlib import Path
    catalog = (Path(journal.__file__).parents[2] / "plugin_utils" / "bpfoom.catalog").read_text()
    assert set(re.findall(r"^-- ([0-9a-f]{32})$", catalog, re.M)) == set(journal.MESSAGE_IDS.values())
    assert catalog.count("\nSubject: ") == len(journal.MESSAGE_IDS)


def test_a_locked_down_kernel_is_named_when_the_verifier_rejects_the_task_name_read(tmp_path):
    # The logs of Debian's own kernels booted with lockdown=confidentiality (issue 23: 6.1, then 6.12).
    lockdown = tmp_path / "lockdown"
    lockdown.write_text("none integrity [confidentiality]\n")
    assert kernel.lockdown_mode(str(lockdown)) == "confidentiality"
    for log in ("; comm = bpf_probe_read_str(...)\n42: (85) call bpf_probe_read_str#45\nunknown func bpf_probe_read_str#45\n",
                "program of this type cannot use helper bpf_probe_read_str#45\n"):
        assert "locked down (lockdown=confidentiality" in kernel.lockdown_hint("confidentiality", log)
        assert kernel.lockdown_hint("integrity", log) == ""          # integrity allows the helper: another cause
    assert kernel.lockdown_hint("confidentiality", "R1 invalid mem access 'scalar'\n") == ""
    assert kernel.lockdown_mode(str(tmp_path / "absent")) is None

"""Kernel acceptance tests: the lab kernel carries the BPF OOM hook as KERNEL-HOOK.md says.

Every scenario is a memcg OOM (safe: it never threatens the host) with three
processes started in order, so the kernel scans them in that order:
hog_a holds 60 MiB, hog_b 10 MiB, and hog_c pushes the 96 MiB cgroup over its
limit at about 24 MiB of its 28. Left alone, the kernel kills hog_a (the
largest). Whichever one dies, the other two then fit with 8 MiB to spare. The
victim is the first hog killed: a second OOM can follow before the victim's
memory is freed (oom_smoke.SECOND_OOM_RACE). A raw test policy that SELECTs a
task also re-selects it while it is still dying (the hook runs before the
kernel's "already a victim" check), so one kill may come with a few reports:
the tests compare the set of names. The catalog's frame leaves dying victims
to the kernel.
"""

import re

import pytest

pytestmark = pytest.mark.lab

LIMIT_MIB = 96
HOGS = [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)]
HOOK_FUNCTIONS = ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name")


def test_patched_kernel_has_the_hook_in_btf(patched_host):
    raw = patched_host.run("bpftool btf dump file /sys/kernel/btf/vmlinux format raw").stdout
    for function in HOOK_FUNCTIONS:
        assert re.search(rf"^\[\d+\] FUNC '{function}'", raw, re.M), function
    assert patched_host.run("python3 /root/bpfoom-test/bpfload.py hook").stdout.strip() == "present"


def test_policy_loads_and_attaches_to_both_hooks(patched_host, policy):
    result = patched_host.attach(policy("probe"), "probe")
    assert "attached evaluate_task" in result.stdout
    assert "attached set_policy_name" in result.stdout
    links = patched_host.pinned_links("probe")
    assert {(link["attach_type"], link["target"]) for link in links} == {
        ("modify_return", "bpf_oom_evaluate_task"), ("trace_fentry", "bpf_set_policy_name")}


def test_without_policy_the_kernel_kills_the_largest(patched_host):
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_a", outcome
    assert set(outcome["policy_names"]) == {"default"}, outcome


def test_policy_picks_its_victim_and_names_itself(patched_host, policy):
    patched_host.attach(policy("prefer_b", target="hog_b", on_target="BPF_EVAL_SELECT",
                               on_other="BPF_EVAL_NEXT"), "prefer_b")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"prefer_b"}, outcome


def test_no_bpf_policy_falls_back_to_the_kernel(patched_host, policy):
    patched_host.attach(policy("fallthrough"), "fallthrough")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_a", outcome
    assert set(outcome["policy_names"]) == {"fallthrough"}, outcome


def test_next_skips_a_task(patched_host, policy):
    patched_host.attach(policy("skip_a", target="hog_a", on_target="BPF_EVAL_NEXT"), "skip_a")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_c", outcome


def test_select_records_points_for_later_kernel_comparisons(patched_host, policy):
    """SELECT of hog_b stores its real badness: hog_c (left to the kernel, larger) then wins.

    The RFC left the points unset on SELECT; the port records oom_badness().
    """
    patched_host.attach(policy("select_b", target="hog_b", on_target="BPF_EVAL_SELECT"), "select_b")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_c", outcome


def test_abort_stops_the_scan_without_a_victim(patched_host, policy):
    patched_host.attach(policy("abort_all", on_other="BPF_EVAL_ABORT"), "abort_all")
    outcome = patched_host.oom(LIMIT_MIB, HOGS, timeout=10)
    assert outcome["timed_out"] and outcome["killed"] == [], outcome
    assert outcome["reports"] == [], outcome      # an aborted scan kills nothing and reports nothing


def test_next_for_every_task_leaves_a_memcg_oom_without_victim(patched_host, policy):
    patched_host.run("echo > /sys/kernel/tracing/trace; "
                     "echo 1 > /sys/kernel/tracing/events/oom/select_bad_process_end/enable")
    try:
        patched_host.attach(policy("skip_all", on_other="BPF_EVAL_NEXT"), "skip_all")
        outcome = patched_host.oom(LIMIT_MIB, HOGS, timeout=10)
        trace = patched_host.run("cat /sys/kernel/tracing/trace").stdout
    finally:
        patched_host.run("echo 0 > /sys/kernel/tracing/events/oom/select_bad_process_end/enable")
    assert outcome["timed_out"] and outcome["killed"] == [], outcome
    assert outcome["no_victim"], outcome
    assert set(outcome["policy_names"]) == {"skip_all"}, outcome   # one report per retry
    assert "select_bad_process_end: policy_name=skip_all" in trace


def test_policy_name_is_truncated_to_15_characters(patched_host, policy):
    patched_host.attach(policy("abcdefghijklmnopqrst", target="hog_b", on_target="BPF_EVAL_SELECT",
                               on_other="BPF_EVAL_NEXT"), "long_name")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"abcdefghijklmno"}, outcome


def test_two_policies_attached_the_newest_decides(patched_host, policy):
    """Records the trampoline's order, which decides how policies are swapped.

    Observed on 6.12: the newest fmod_ret program runs first and its non-zero
    verdict wins; fentry programs run in the same order, so the OLDEST one
    writes the name last. While two policies overlap (make-before-break), the
    victim is the new policy's and the report still shows the old name.
    """
    patched_host.attach(policy("first_a", target="hog_a", on_target="BPF_EVAL_SELECT",
                               on_other="BPF_EVAL_NEXT"), "first")
    patched_host.attach(policy("second_b", target="hog_b", on_target="BPF_EVAL_SELECT",
                               on_other="BPF_EVAL_NEXT"), "second")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"first_a"}, outcome

    patched_host.detach("first")
    outcome = patched_host.oom(LIMIT_MIB, HOGS)
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"second_b"}, outcome


def test_unpatched_kernel_refuses_with_hook_missing(unpatched_host, policy):
    result = unpatched_host.attach(policy("prefer_b", target="hog_b", on_target="BPF_EVAL_SELECT"),
                                   "prefer_b", check=False)
    assert result.returncode == 3, result
    assert "has no BPF OOM hook" in result.stderr
    assert "bpf_oom_evaluate_task" in result.stderr
    assert unpatched_host.run("ls /sys/fs/bpf/bpfoom-test 2>/dev/null | wc -l").stdout.strip() == "0"

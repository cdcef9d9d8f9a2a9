"""Lab tier of the policy catalog: each template steers a memcg OOM as docs/docsite/rst/policies.rst says.

Policies are built by the catalog (tests/policytools.py: the same validation,
templates and compile cache as the policy_build action) and applied with the
agent's own loader, bpfoomctl. Scenario: hog_a 60 MiB, hog_b 10 MiB, hog_c
(the trigger) 28 MiB in a 96 MiB memcg; left alone, the kernel kills hog_a.
"""

import re
import time

import pytest

from fleetlab import fleet
from policytools import build_policy

pytestmark = pytest.mark.lab

LIMIT_MIB = 96


def apply(host, cache, args):
    remote = host.upload_policy(build_policy(args, cache))
    result = host.bpfoomctl(f"apply {remote}")
    assert result["status"]["attached_policy"]["policy_name"] == args["name"]
    return remote


def test_prefer_by_comm_kills_the_preferred_task(agent_host, policy_cache):
    apply(agent_host, policy_cache, {"name": "prefer_b", "template": "prefer_avoid",
                                     "params": {"prefer": {"comm": ["hog_b"]}}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"prefer_b"}, outcome
    assert len(outcome["kill_lines"]) == len(outcome["reports"]), outcome   # the frame never re-selects a dying victim


def test_prefer_by_cgroup_kills_the_task_in_that_slice(agent_host, policy_cache):
    apply(agent_host, policy_cache, {"name": "batch_first", "template": "prefer_avoid",
                                     "params": {"prefer": {"cgroup": ["batch.slice"]}}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10, "batch.slice"), ("hog_c", 28)])
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"batch_first"}, outcome


def test_avoiding_every_task_still_leaves_a_victim(agent_host, policy_cache):
    apply(agent_host, policy_cache, {"name": "avoid_all", "template": "prefer_avoid",        # the hogs run as root
                                     "params": {"avoid": {"comm_prefix": ["hog_"], "uid": [0]}}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])
    assert outcome["victim"] == "hog_a", outcome               # ties among the avoided: the kernel's choice
    assert not outcome["no_victim"], outcome


def test_strict_avoid_really_never_kills(agent_host, policy_cache):
    """The documented cost of strict: avoiding everything leaves the memcg OOM without a victim."""
    apply(agent_host, policy_cache, {"name": "strict_all", "template": "prefer_avoid", "strict": True,
                                     "protect_by_forgeable_comm": True,          # the frame's rule, not the trust's
                                     "params": {"avoid": {"comm_prefix": ["hog_"]}}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)], timeout=8)
    assert outcome["killed"] == [] and outcome["no_victim"], outcome


def test_cgroup_priority_kills_the_lowest_priority(agent_host, policy_cache):
    apply(agent_host, policy_cache, {"name": "by_priority", "template": "cgroup_priority",
                                     "params": {"default_priority": 500, "priorities": [
                                         {"cgroup": "important.scope", "priority": 900},
                                         {"cgroup": "batch.slice", "priority": 100}]}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60, "important.scope"), ("hog_b", 10, "batch.slice"),
                                         ("hog_c", 28)])
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"by_priority"}, outcome


def test_youngest_tie_breaker_kills_the_newest_of_a_tier(agent_host, policy_cache):
    apply(agent_host, policy_cache, {"name": "youngest", "template": "prefer_avoid", "tie_breaker": "youngest",
                                     "params": {"prefer": {"comm_prefix": ["hog_"]}}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])
    assert outcome["victim"] == "hog_c", outcome


def test_a_tie_the_kernel_took_is_still_ranked(agent_host, policy_cache):
    """hog_b, then hog_a of the same rank: the kernel's comparison takes hog_a. The frame must
    know hog_a's rank from that tie (bpfoom_chosen), or it would leave hog_c to the kernel too."""
    apply(agent_host, policy_cache, {"name": "prefer_c", "template": "prefer_avoid",
                                     "params": {"prefer": {"comm": ["hog_c"]}}})
    outcome = agent_host.oom(LIMIT_MIB, [("hog_b", 10), ("hog_a", 60), ("hog_c", 28)])
    assert outcome["victim"] == "hog_c", outcome
    assert set(outcome["policy_names"]) == {"prefer_c"}, outcome


def test_select_pid_resolves_the_pidfile_on_the_host(agent_host, policy_cache):
    remote = agent_host.upload_policy(build_policy(
        {"name": "pid_b", "template": "select_pid", "params": {"pidfile": "/run/hog_b.pid"}}, policy_cache))
    outcome = agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)],
                             before_trigger=f"bpfoomctl apply {remote}")
    assert outcome["victim"] == "hog_b", outcome
    assert set(outcome["policy_names"]) == {"pid_b"}, outcome


def test_each_selection_becomes_a_journal_entry(agent_host, policy_cache):
    apply(agent_host, policy_cache, {"name": "prefer_b", "template": "prefer_avoid",
                                     "params": {"prefer": {"comm": ["hog_b"]}}})
    agent_host.run("journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1; true")
    agent_host.oom(LIMIT_MIB, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])
    assert agent_host.bpfoomctl("events --once")["events"] >= 1
    journal = agent_host.run("journalctl -t bpfoom -o export --no-pager").stdout
    assert "BPFOOM_POLICY_NAME=prefer_b" in journal
    assert "BPFOOM_VICTIM_COMM=hog_b" in journal
    assert "BPFOOM_DISPLACED_COMM=hog_a" in journal


def test_strict_avoid_of_everything_still_has_a_victim_in_a_global_oom(agent_host, policy_cache):
    """Issue 10: strict avoiding every unit and slice used to panic the host on a global OOM
    ("System is deadlocked on memory"). Now the avoided tasks rank last but stay eligible: the
    kernel kills the hog, the host keeps answering SSH, and its report names the policy."""
    apply(agent_host, policy_cache, {"name": "strict_every", "template": "prefer_avoid", "strict": True,
                                     "params": {"avoid": {"cgroup": ["system.slice", "user.slice", "init.scope"]}}})
    # All of the host's memory but 16 MiB, in one process outside any memcg limit: a global OOM
    # (within overcommit's heuristic limit, so the mmap itself is allowed).
    hog = agent_host.run(
        "dmesg -C; total=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo); "
        f"timeout 300 {agent_host.guest_dir}/memhog global_hog $((total - 16)); echo exit=$?", check=False, timeout=400)
    assert "exit=137" in hog.stdout, hog                    # SIGKILL: the OOM killer's
    # sshd may reset the first connection while the kernel still reclaims: a minute to answer.
    deadline = time.monotonic() + 60
    while not fleet.ssh_ready(agent_host.host):
        assert time.monotonic() < deadline, "the host no longer answers SSH after the global OOM"
        time.sleep(2)
    kernel_log = agent_host.run("dmesg").stdout
    assert "System is deadlocked on memory" not in kernel_log
    reports = [line for line in kernel_log.splitlines() if "invoked oom-killer" in line]
    assert reports and all("policy_name=strict_every" in line for line in reports), kernel_log
    assert "constraint=CONSTRAINT_NONE" in kernel_log, kernel_log    # global, not a memcg OOM
    killed = re.findall(r"Killed process \d+ \((\S+)\)", kernel_log)
    assert killed == ["global_hog"], kernel_log
    assert agent_host.bpfoomctl("status")["attached_policy"]["policy_name"] == "strict_every"

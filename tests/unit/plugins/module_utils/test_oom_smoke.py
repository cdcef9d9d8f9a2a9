"""The smoke test keeps only the kernel's OOM reports about its own cgroup."""

from ansible_collections.bpfoom.fleet.plugins.module_utils.oom_smoke import reports_about

OURS = [
    "trigger invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, policy_name=web, oom_score_adj=0",
    "CPU: 0 UID: 0 PID: 1102 Comm: trigger Not tainted 6.12.117-bpfoom",
    "memory: usage 131072kB, limit 131072kB, failcnt 12",
    "Memory cgroup stats for /bpfoom-smoke-1100:",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/bpfoom-smoke-1100,"
    "task_memcg=/bpfoom-smoke-1100,task=report-gen,pid=1102,uid=0",
    "Memory cgroup out of memory: Killed process 1102 (report-gen) total-vm:30428kB, anon-rss:3456kB",
]
OTHER = [
    "java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, policy_name=web, oom_score_adj=0",
    "Memory cgroup stats for /system.slice/app.service:",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/system.slice/app.service,task_memcg=/system.slice/app.service,task=java,pid=77,uid=0",
    "Memory cgroup out of memory: Killed process 77 (java) total-vm:1kB",
]
NO_VICTIM = [
    "trigger invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, policy_name=strict, oom_score_adj=0",
    "Memory cgroup stats for /bpfoom-smoke-1100:",
    "Out of memory and no killable processes...",
]


def test_only_the_reports_about_our_cgroup():
    assert reports_about(OTHER + OURS + OTHER, "/bpfoom-smoke-1100") == [(OURS[0], OURS[-1])]


def test_a_report_without_a_victim_is_kept():
    assert reports_about(NO_VICTIM, "/bpfoom-smoke-1100") == [(NO_VICTIM[0], None)]


def test_a_cgroup_whose_name_extends_ours_is_not_ours():
    assert reports_about(OURS, "/bpfoom-smoke-110") == []

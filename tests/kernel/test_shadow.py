"""Lab tier of issue 11: see what a policy would do before enforcing it (shadow mode, explain, metrics).

Shadow mode runs on every kind of lab host (tests/lab_fleet.py: the lab's
patched kernel on Debian 12 and 13, Debian's own 6.12 and 6.1 without the hook): the policy prefers
hog_b, the kernel's own choice is hog_a (the biggest), so they disagree, and
the kernel's OOM report says what really happened. explain runs just before an
enforced OOM on the same scenario and must name its victim.
"""

import json
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab_fleet import HOOK_HOSTS, NO_HOOK_HOSTS
from fleetlab import fleet
from policytools import install_agent, run_playbook
from test_agent import METRICS, PLAYBOOKS, PREFER_B, bpfoomctl, play, wait_for_metrics
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl.journal import MESSAGE_IDS

pytestmark = pytest.mark.lab

SCENARIO = [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)]      # hog_a: the kernel's choice; hog_b: the policy's


def shadow_entries(host, since, ready=bool, timeout=20):
    """The shadow verdicts the agent wrote since `since` (Unix time), once ready(entries) holds (the agent
    follows a ring buffer: an entry comes a moment after its OOM)."""
    deadline = time.monotonic() + timeout
    while True:
        out = fleet.run_on(host, f"journalctl -o json --since @{since} MESSAGE_ID={MESSAGE_IDS['shadow']}").stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        if ready(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(1)


def killed_pid(outcome, comm):
    return int(re.search(rf"Killed process (\d+) \({comm}\)", " ".join(outcome["kill_lines"]))[1])


def parse(text):
    """A metrics file, parsed by Prometheus' own text parser: {name or name{labels}: value}."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "policy_hash")
            values[sample.name + (f"{{{label}}}" if label else "")] = sample.value
    return values


def metrics(host, ooms):
    """The agent's metrics once its file (rewritten every 10 s) counts this many OOMs."""
    return parse(wait_for_metrics(host, lambda text: parse(text).get("bpfoom_ooms_total") == ooms))


@pytest.mark.parametrize("name", HOOK_HOSTS + NO_HOOK_HOSTS)
def test_shadow_mode_records_both_choices_and_decides_nothing(lab, agent_lab, prepared, name):
    host, lab_host, hook = lab[name], prepared(name), name in HOOK_HOSTS
    fleet.run_on(host, f"install -d -m 0755 {METRICS.rsplit('/', 1)[0]}")
    process, results = play(agent_lab, "apply_policy.yml", name, policy=dict(PREFER_B, mode="shadow"))
    assert process.returncode == 0 and results["Run the policy"][name]["mode"] == "shadow"
    fleet.run_on(host, "systemctl restart bpfoom.service")       # the metrics directory exists now
    status = bpfoomctl(host, "status")
    assert status["attached_policy"]["mode"] == "shadow" and status["desired_mode"] == "shadow"
    shadow = next(p for p in status["policies"] if p["attached"])
    assert sorted(link["target"] for link in shadow["links"]) == [
        "oom_badness", "oom_kill_process", "out_of_memory", "out_of_memory"]
    # policy_info explains the desired policy, on both kernels.
    process, results = run_playbook(PLAYBOOKS / "info.yml", fleet.inventory_path(), "--limit", name,
                                    results_dir=agent_lab["work"])
    info = results["Read the host"][name]
    assert info["attached_policy"]["mode"] == "shadow" and info["explain"]["would_kill"]["pid"] > 1, info
    since = int(float(fleet.run_on(host, "date +%s.%N").stdout))

    outcome = lab_host.oom(96, SCENARIO)
    # The kernel's choice is unchanged, and no policy is credited with it.
    assert outcome["victim"] == "hog_a", outcome
    if hook:
        assert outcome["policy_names"] == ["default"], outcome["reports"]
    else:
        assert "policy_name=" not in outcome["reports"][0]
    # One journal entry for this OOM, naming both, as the kernel's report does.
    [entry] = shadow_entries(host, since)
    assert entry["BPFOOM_OUTCOME"] == "disagree" and entry["BPFOOM_OOM"] == "memcg"
    assert entry["BPFOOM_KERNEL_VICTIM_COMM"] == "hog_a"
    assert int(entry["BPFOOM_KERNEL_VICTIM_PID"]) == killed_pid(outcome, "hog_a")
    assert entry["BPFOOM_POLICY_VICTIM_COMM"] == "hog_b"
    assert entry["MESSAGE"] == (f"bpfoom policy prefer_b (shadow) would have killed hog_b[{entry['BPFOOM_POLICY_VICTIM_PID']}]; "
                                f"the kernel killed hog_a[{entry['BPFOOM_KERNEL_VICTIM_PID']}]; "
                                "the policy's rank rested on comm (chosen by the process); uid 0")
    assert entry["BPFOOM_POLICY_VICTIM_MATCHED"] == "comm" and entry["BPFOOM_POLICY_VICTIM_UID"] == "0"
    # The metrics parse, and say what status says.
    status = bpfoomctl(host, "status")
    counters = next(p for p in status["policies"] if p["attached"])
    values = metrics(host, counters["ooms"])
    assert values["bpfoom_policy_info{mode=shadow,policy_name=prefer_b}"] == 1
    assert values["bpfoom_hook_present"] == (1 if hook else 0)
    for outcome_kind in ("agree", "disagree", "no_victim", "not_comparable"):
        assert values[f"bpfoom_shadow_outcomes_total{{outcome={outcome_kind}}}"] == counters[f"shadow_{outcome_kind}"]
    assert values["bpfoom_ooms_total"] == counters["ooms"] >= 1 and counters["shadow_disagree"] >= 1
    # Promotion (with the hook) is an ordinary apply of the same policy in enforce mode; then the policy decides.
    if hook:
        process, results = play(agent_lab, "apply_policy.yml", name, policy=PREFER_B)
        assert results["Run the policy"][name]["changed"] and results["Run the policy"][name]["mode"] == "enforce"
        assert lab_host.oom(96, SCENARIO)["victim"] == "hog_b"
    play(agent_lab, "apply_policy.yml", name, policy=PREFER_B, state="absent")


def test_explain_names_the_victim_of_the_next_enforced_oom(lab, agent_lab, hook2_host):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    # Just before the trigger: the scenario's cgroup is in the scope of the scenario's PID ($PPID of the hook).
    outcome = hook2_host.oom(96, SCENARIO, before_trigger="bpfoomctl explain "
                             "--cgroup=/bpfoom.slice/bpfoom-smoke.slice/bpfoom-smoke-$PPID.scope/smoke > /run/explain.json")
    explained = json.loads(fleet.run_on(host, "cat /run/explain.json").stdout)
    assert explained["would_kill"]["comm"] == "hog_b" and explained["kernel_would_kill"]["comm"] == "hog_a"
    assert explained["would_kill"]["pid"] == killed_pid(outcome, "hog_b"), (explained, outcome)
    assert outcome["victim"] == "hog_b" and not explained["agrees"]


@pytest.mark.parametrize("name", HOOK_HOSTS + NO_HOOK_HOSTS)
def test_explain_previews_a_policy_that_is_not_attached(lab, agent_lab, name):
    host = lab[name]
    play(agent_lab, "apply_policy.yml", name, policy=PREFER_B, state="absent")
    install_agent(host)                     # the program alone: no unit, no policy
    entry = agent_lab["cache"]
    built = sorted(p for p in entry.iterdir() if (p / "manifest.json").exists() and
                   json.loads((p / "manifest.json").read_text())["name"] == "prefer_b")[0]
    fleet.run_on(host, "install -d -m 0700 /root/preview")
    for file in ("policy.bpf.o", "manifest.json"):
        fleet.copy_to(host, built / file, f"/root/preview/{file}")
    # A process the policy prefers (its comm is its program's name), detached from the SSH session.
    fleet.run_on(host, "cp /bin/sleep /root/hog_b; setsid /root/hog_b 300 >/dev/null 2>&1 < /dev/null & "
                       "echo $! > /run/sleeper.pid")
    try:
        preview = bpfoomctl(host, "explain /root/preview")
    finally:
        fleet.run_on(host, "kill $(cat /run/sleeper.pid)")
    assert preview["policy_name"] == "prefer_b" and preview["would_kill"]["comm"] == "hog_b"
    assert preview["would_kill"]["rank"] == 2 and preview["tasks"] >= 5
    assert bpfoomctl(host, "status")["attached_policy"] is None      # a preview attaches nothing
    # policy_info explains the desired policy; verify shows it per host.
    process, results = run_playbook(PLAYBOOKS / "info.yml", fleet.inventory_path(), "--limit", name,
                                    results_dir=agent_lab["work"])
    assert results["Read the host"][name]["explain"] is None        # nothing desired: nothing to explain


def test_a_global_oom_decided_without_a_scan_is_reported_as_not_comparable(lab, agent_lab, _unpatched):
    """vm.oom_kill_allocating_task: the kernel kills the allocating task without scoring anyone, so a
    shadow policy has nothing to compare; it must say so, not count an agreement. On the unpatched kernel,
    with a global OOM (the whole host's memory)."""
    host = lab["nohook1"]
    process, _results = play(agent_lab, "apply_policy.yml", "nohook1", policy=dict(PREFER_B, mode="shadow"))
    assert process.returncode == 0
    try:
        since = int(float(fleet.run_on(host, "date +%s.%N").stdout))

        def hog_killed_without_scan(entries):
            return any(entry["BPFOOM_KERNEL_VICTIM_COMM"] == "global_hog" and entry["BPFOOM_OUTCOME"] == "not_comparable"
                       for entry in entries)

        # The sysctl only spares the scan when the allocating task may be killed: when the allocation that runs
        # out is sshd's or udevd's (oom_score_adj -1000) or a kernel thread's, the kernel scans after all, and
        # the shadow rightly compares. Which task allocates last is a race, so the hog runs until the kernel
        # killed it without a scan (once, nearly always; at most three times).
        for _attempt in range(3):
            try:
                fleet.run_on(host, "sysctl -q vm.oom_kill_allocating_task=1")
                hog = _unpatched.run(
                    "total=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo); "
                    f"timeout 300 {_unpatched.guest_dir}/memhog global_hog $((total - 16)); echo exit=$?",
                    check=False, timeout=400)
                assert "exit=137" in hog.stdout, hog            # the OOM killer's SIGKILL
            finally:
                for _wait in range(30):
                    if fleet.ssh_ready(host):
                        break
                    time.sleep(2)
                fleet.run_on(host, "sysctl -q vm.oom_kill_allocating_task=0")
            entries = shadow_entries(host, since, ready=hog_killed_without_scan)
            if hog_killed_without_scan(entries):
                break
        assert hog_killed_without_scan(entries), entries
        # The sysctl kills whichever task allocates when memory runs out: the hog, and sometimes another
        # process first (the agent's python was one). An OOM nobody was scored in is not comparable; so is
        # one whose scan met an earlier victim still dying: the kernel stops there and kills nothing.
        for entry in entries:
            assert entry["BPFOOM_OOM"] == "global", entry
            if entry["BPFOOM_CANDIDATES"] == "0":
                assert entry["BPFOOM_OUTCOME"] == "not_comparable" and "without a scan" in entry["MESSAGE"], entry
            elif entry["BPFOOM_OUTCOME"] == "not_comparable":
                assert "still dying" in entry["MESSAGE"] and entry["BPFOOM_KERNEL_VICTIM_PID"] == "0", entry
            else:
                assert entry["BPFOOM_OUTCOME"] in ("agree", "disagree", "no_victim"), entry
        compared = [entry for entry in entries if entry["BPFOOM_OUTCOME"] != "not_comparable"]
        counters = next(p for p in bpfoomctl(host, "status")["policies"] if p["attached"])
        assert counters["shadow_not_comparable"] >= len(entries) - len(compared) >= 1
        assert counters["shadow_agree"] + counters["shadow_disagree"] + counters["shadow_no_victim"] >= len(compared)
    finally:
        # The tests after this one (and test_rollout) expect nohook1 without a policy, even if this one failed.
        play(agent_lab, "apply_policy.yml", "nohook1", policy=PREFER_B, state="absent")


@pytest.mark.parametrize("name", NO_HOOK_HOSTS)
def test_a_kernel_locked_down_to_confidentiality_is_named_and_nothing_attaches(lab, agent_lab, name):
    """lockdown=confidentiality (a Secure Boot host may choose it; Debian's kernels have the lockdown LSM) forbids
    the helper every policy reads a task's name with (bpf_probe_read_kernel_str): 6.1's verifier calls it an
    unknown function, 6.12's a helper this program cannot use. The apply and explain must name the lockdown."""
    fleet.reboot(name, hard=True, kernel_args="lockdown=confidentiality")
    try:
        assert "[confidentiality]" in fleet.run_on(lab[name], "cat /sys/kernel/security/lockdown").stdout
        process, results = play(agent_lab, "apply_policy.yml", name, policy=dict(PREFER_B, mode="shadow"))
        failed = results["Run the policy"][name]
        assert process.returncode != 0, failed
        assert name in failed["msg"] and "locked down (lockdown=confidentiality" in failed["msg"], failed["msg"]
        assert bpfoomctl(lab[name], "status")["attached_policy"] is None
        built = next(p for p in agent_lab["cache"].iterdir() if (p / "manifest.json").exists() and
                     json.loads((p / "manifest.json").read_text())["name"] == "prefer_b")
        fleet.run_on(lab[name], "install -d -m 0700 /root/locked")
        for file in ("policy.bpf.o", "manifest.json"):
            fleet.copy_to(lab[name], built / file, f"/root/locked/{file}")
        explained = fleet.run_on(lab[name], "bpfoomctl explain /root/locked", check=False)
        assert explained.returncode != 0 and "locked down (lockdown=confidentiality" in explained.stdout, explained
    finally:
        fleet.reboot(name, hard=True, kernel_args="")
        play(agent_lab, "apply_policy.yml", name, policy=PREFER_B, state="absent")
    assert "[none]" in fleet.run_on(lab[name], "cat /sys/kernel/security/lockdown").stdout

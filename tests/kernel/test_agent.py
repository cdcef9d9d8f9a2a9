"""Lab tier of the host agent: the role, bpfoomctl, bpfoom.service and the policy modules.

Driven through ansible-playbook against the lab inventory, on hook2 (patched)
and nohook1 (Debian's 6.12, no hook); what must hold on every Debian and kernel
also on trixie1 (Debian 13, patched) and nohook2 (Debian's 6.1).
Scenario hogs as in test_hook.py.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from fleetlab import fleet
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl.journal import MESSAGE_IDS  # the agent's own
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import contract
from lab_fleet import HOOK_HOSTS, NO_HOOK_HOSTS
from policytools import AGENT_PACKAGE, build_policy, run_playbook

pytestmark = pytest.mark.lab

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
# Every file an agent install writes: the package's modules, the command, the unit.
AGENT_PATHS = sorted([f"{contract.PACKAGE_DIR}/{module.name}" for module in AGENT_PACKAGE.glob("*.py")]
                     + [contract.COMMAND, contract.UNIT_FILE])
OLD_AGENT = f"{contract.LIB_DIR}/bpfoomctl.py"
PREFER_B = {"name": "prefer_b", "template": "prefer_avoid", "params": {"prefer": {"comm": ["hog_b"]}}}
# systemd-analyze security's exposure of bpfoom.service, at most (0 is the most confined, 10 the least).
SANDBOX_EXPOSURE = 1.6
PREFER_C = {"name": "prefer_c", "template": "prefer_avoid", "params": {"prefer": {"comm": ["hog_c"]}}}


def play(agent_lab, playbook, limit, *extra, policy=None, state=None):
    extra_vars = {"bpfoom_object_cache": str(agent_lab["cache"])}
    if policy:
        extra_vars["bpfoom_policy"] = policy
    if state:
        extra_vars["bpfoom_policy_state"] = state
    return run_playbook(PLAYBOOKS / playbook, fleet.inventory_path(), "--limit", limit,
                        "-e", json.dumps(extra_vars), *extra, results_dir=agent_lab["work"])


def changed_count(process):
    recap = [line for line in process.stdout.splitlines() if " changed=" in line]
    return sum(int(line.split(" changed=")[1].split()[0]) for line in recap)


def bpfoomctl(host, command):
    return json.loads(fleet.run_on(host, f"bpfoomctl {command}").stdout)


def test_role_is_check_clean_then_idempotent(lab, agent_lab):
    hosts = ",".join(HOOK_HOSTS + NO_HOOK_HOSTS)
    process, _results = play(agent_lab, "agent.yml", hosts, "--check")
    assert process.returncode == 0, process.stdout[-3000:]
    assert fleet.run_on(lab["hook2"], "test -e /usr/local/sbin/bpfoomctl", check=False).returncode == 1
    process, _results = play(agent_lab, "agent.yml", hosts)
    assert process.returncode == 0, process.stdout[-3000:]
    assert changed_count(process) > 0
    process, _results = play(agent_lab, "agent.yml", hosts)
    assert process.returncode == 0 and changed_count(process) == 0, process.stdout[-3000:]
    for name in HOOK_HOSTS + NO_HOOK_HOSTS:
        assert fleet.run_on(lab[name], "systemctl is-active bpfoom.service").stdout.strip() == "active"
        assert fleet.run_on(lab[name], "stat -c %a /var/lib/bpfoom").stdout.strip() == "700"


@pytest.mark.parametrize("name", HOOK_HOSTS)
def test_the_unit_s_sandbox_scores_the_same_on_each_systemd(lab, agent_lab, name):
    """systemd-analyze security on Debian 12's systemd (252) and 13's (257): the unit's sandbox options mean the
    same on both (1.6 on each, measured when this test was written), and the agent attaches its policy under them."""
    play(agent_lab, "apply_policy.yml", name, policy=PREFER_C)
    try:
        report = fleet.run_on(lab[name], "systemd-analyze security --no-pager bpfoom.service").stdout
        score = float(re.search(r"Overall exposure level for bpfoom\.service: ([0-9.]+)", report)[1])
        assert score <= SANDBOX_EXPOSURE, report[-2000:]
        assert bpfoomctl(lab[name], "status")["attached_policy"]["policy_name"] == "prefer_c"
    finally:     # the tests after this one start from a host without a policy
        play(agent_lab, "apply_policy.yml", name, policy=PREFER_C, state="absent")


def test_policy_module_applies_verifies_and_is_idempotent(lab, agent_lab):
    process, results = play(agent_lab, "apply_policy.yml", "hook2", "--diff", policy=PREFER_B)
    assert process.returncode == 0, process.stdout[-3000:]
    applied = results["Run the policy"]["hook2"]
    assert applied["changed"] and applied["policy_name"] == "prefer_b" and applied["hook"]
    assert {(link["attach_type"], link["target"]) for link in applied["links"]} == {
        ("modify_return", "bpf_oom_evaluate_task"), ("trace_fentry", "bpf_set_policy_name")}
    assert "policy_name: prefer_b" in applied["diff"][0]["after"]
    assert applied["evaluations"] == 0 and applied["selections"] == 0      # the kernel's counters, just attached
    assert bpfoomctl(lab["hook2"], "status")["attached_policy"]["policy_name"] == "prefer_b"

    process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    assert process.returncode == 0 and changed_count(process) == 0, process.stdout[-3000:]
    again = results["Run the policy"]["hook2"]
    assert again["files_changed"] == [] and again["policy_name"] == "prefer_b"


def test_policy_module_installs_the_agent_in_the_same_execution(lab, agent_lab):
    """A host with no agent at all: one policy task writes the files, starts the unit and attaches."""
    host = lab["hook2"]
    fleet.run_on(host, "systemctl disable --now bpfoom.service; rm -rf /usr/local/lib/bpfoom /usr/local/sbin/bpfoomctl "
                       "/etc/systemd/system/bpfoom.service; systemctl daemon-reload; umount /sys/fs/bpf")
    try:
        process, results = play(agent_lab, "apply_policy.yml", "hook2", "--check", policy=PREFER_C)
        assert process.returncode == 0, process.stdout[-3000:]
        predicted = results["Run the policy"]["hook2"]
        assert predicted["changed"] and predicted["policy_name"] == "prefer_c"
        assert predicted["agent"]["start"] and predicted["agent"]["mount_bpffs"]
        assert sorted(predicted["files_changed"]) == AGENT_PATHS
        assert fleet.run_on(host, "test -e /usr/local/sbin/bpfoomctl", check=False).returncode == 1

        process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
        assert process.returncode == 0, process.stdout[-3000:]
        applied = results["Run the policy"]["hook2"]
        assert applied["policy_name"] == "prefer_c" and sorted(applied["files_changed"]) == AGENT_PATHS
        assert fleet.run_on(host, "systemctl is-active bpfoom.service").stdout.strip() == "active"
        assert fleet.run_on(host, "stat -c '%a %U' /usr/local/sbin/bpfoomctl /var/lib/bpfoom").stdout.split("\n")[:2] \
            == ["755 root", "700 root"]

        # What an older agent left (the one-file layout) goes at the next install; the agent restarts.
        fleet.run_on(host, f"echo 'the one-file agent' > {OLD_AGENT}")
        process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
        assert process.returncode == 0, process.stdout[-3000:]
        upgraded = results["Run the policy"]["hook2"]
        assert upgraded["files_removed"] == [OLD_AGENT] and upgraded["agent"]["restart"] and upgraded["changed"]
        assert fleet.run_on(host, f"test -e {OLD_AGENT}", check=False).returncode == 1
    finally:
        fleet.run_on(host, "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf")
        play(agent_lab, "agent.yml", "hook2")


def test_a_host_without_libbpf_is_told_by_the_policy_task_and_nothing_changes(lab, agent_lab):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    hidden = "/root/libbpf-hidden"
    fleet.run_on(host, f"mkdir -p {hidden} && mv /usr/lib/x86_64-linux-gnu/libbpf.so.1* {hidden}/ && ldconfig")
    try:
        process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
        failed = results["Run the policy"]["hook2"]
        assert process.returncode != 0 and failed["libbpf_missing"] and failed["package_manager"] == "apt"
        assert failed["msg"].startswith("hook2: libbpf.so.1 is missing: install libbpf1"), failed["msg"]
        assert not failed["changed"] and failed["files_changed"] == []
    finally:
        fleet.run_on(host, f"mv {hidden}/* /usr/lib/x86_64-linux-gnu/ && ldconfig")
    assert bpfoomctl(host, "status")["attached_policy"]["policy_name"] == "prefer_b"


def test_check_mode_predicts_a_swap_without_touching_the_host(lab, agent_lab):
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    process, results = play(agent_lab, "apply_policy.yml", "hook2", "--check", "--diff", policy=PREFER_C)
    assert process.returncode == 0, process.stdout[-3000:]
    predicted = results["Run the policy"]["hook2"]
    assert predicted["changed"] and predicted["policy_name"] == "prefer_c"
    assert bpfoomctl(lab["hook2"], "status")["attached_policy"]["policy_name"] == "prefer_b"


@pytest.mark.parametrize("name", HOOK_HOSTS)
def test_swap_has_no_moment_without_a_policy(lab, agent_lab, name):
    """A sampler counts the evaluate links in the kernel while bpfoomctl swaps policies.

    bpfoomctl holds both policies attached for a second (BPFOOM_OVERLAP_HOLD_S)
    so that the sampler, slow under TCG, sees the overlap: never 0, then 2, then 1.
    """
    host = lab[name]
    play(agent_lab, "apply_policy.yml", name, policy=PREFER_B)
    entry = build_policy(PREFER_C, agent_lab["cache"])
    fleet.run_on(host, "install -d -m 0700 /root/swap")
    for name in ("policy.bpf.o", "manifest.json"):
        fleet.copy_to(host, entry / name, f"/root/swap/{name}")
    sampler = ("rm -f /tmp/samples; while [ ! -e /tmp/stop-sampling ]; do "
               "bpftool -j link show | grep -o modify_return | wc -l >> /tmp/samples; done")
    fleet.run_on(host, "rm -f /tmp/stop-sampling")
    background = subprocess.Popen(fleet.ssh_command(host, sampler), stdin=subprocess.DEVNULL)
    try:
        time.sleep(2)
        swapped = json.loads(fleet.run_on(host, "BPFOOM_OVERLAP_HOLD_S=1 bpfoomctl apply /root/swap").stdout)
        time.sleep(1)
    finally:
        fleet.run_on(host, "touch /tmp/stop-sampling")
        background.wait(timeout=60)
    assert swapped["previous"]["policy_name"] == "prefer_b" and swapped["policy_name"] == "prefer_c"
    samples = [int(value) for value in fleet.run_on(host, "cat /tmp/samples").stdout.split()]
    assert len(samples) > 10 and min(samples) >= 1, samples
    first_two = samples.index(2)
    assert set(samples[:first_two]) == {1} and samples[-1] == 1, samples
    assert all(count in (1, 2) for count in samples), samples


def test_verifier_rejection_fails_with_its_log_and_keeps_the_old_policy(lab, agent_lab, tmp_path):
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    bad = tmp_path / "bad.bpf.c.j2"
    # 80 reads before the wild one: the verifier's log (one message from libbpf) is some 40 KiB, and its end,
    # where it says why, must reach the message whole.
    bad.write_text('{% extends "frame.bpf.c.j2" %}\n{% block rank %}\n\tint padding = 0;\n'
                   + "".join(f"\tpadding += ((volatile struct task_struct *)task)->pid ^ {i};\n" for i in range(80))
                   + '\treturn padding + *(volatile int *)(long)task->pid;   /* a wild pointer: the verifier says no */\n'
                   '{% endblock %}\n')
    process, results = play(agent_lab, "apply_policy.yml", "hook2",
                            policy={"name": "wild", "template_file": str(bad)})
    assert process.returncode != 0
    message = results["Run the policy"]["hook2"]["msg"]
    assert message.startswith("hook2: ") and "verifier rejected policy 'wild'" in message, message
    assert "invalid mem access" in message, message
    assert bpfoomctl(lab["hook2"], "status")["attached_policy"]["policy_name"] == "prefer_b"


@pytest.mark.parametrize("name", HOOK_HOSTS)
def test_reboot_brings_the_same_policy_back(lab, agent_lab, name):
    play(agent_lab, "apply_policy.yml", name, policy=PREFER_C)
    before = bpfoomctl(lab[name], "status")["attached_policy"]
    fleet.reboot(name)
    for _attempt in range(30):
        after = bpfoomctl(lab[name], "status")["attached_policy"]
        if after:
            break
        time.sleep(1)
    assert after == before


def test_a_killed_agent_leaves_the_policy_and_its_restart_adopts_it(lab, agent_lab):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    links_before = sorted(l["link_id"] for p in bpfoomctl(host, "status")["policies"] for l in p["links"])
    fleet.run_on(host, "systemctl kill --signal=SIGKILL bpfoom.service")
    time.sleep(0.5)
    assert bpfoomctl(host, "status")["attached_policy"]["policy_name"] == "prefer_b"
    for _attempt in range(30):
        if fleet.run_on(host, "systemctl is-active bpfoom.service", check=False).stdout.strip() == "active":
            break
        time.sleep(1)
    status = bpfoomctl(host, "status")
    assert status["attached_policy"]["policy_name"] == "prefer_b"
    assert sorted(l["link_id"] for p in status["policies"] for l in p["links"]) == links_before   # adopted
    fleet.run_on(host, "systemctl restart bpfoom.service")
    assert sorted(l["link_id"] for p in bpfoomctl(host, "status")["policies"] for l in p["links"]) == links_before


def test_the_running_agent_logs_each_selection(lab, agent_lab, hook2_host):
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    outcome = hook2_host.oom(96, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])
    assert outcome["victim"] == "hog_b", outcome
    for _attempt in range(20):
        # Found by its kind's MESSAGE_ID (journald took the binary-safe native form).
        journal = fleet.run_on(lab["hook2"], "journalctl -o export --no-pager _SYSTEMD_UNIT=bpfoom.service "
                                             f"MESSAGE_ID={MESSAGE_IDS['selection']}").stdout
        if "BPFOOM_VICTIM_COMM=hog_b" in journal:
            break
        time.sleep(1)
    assert "BPFOOM_POLICY_NAME=prefer_b" in journal and "BPFOOM_VICTIM_COMM=hog_b" in journal
    assert "PRIORITY=5" in journal and "SYSLOG_IDENTIFIER=bpfoom" in journal
    # journalctl -x explains it from the catalog the agent's install indexed, with the entry's own fields.
    explained = fleet.run_on(lab["hook2"], "journalctl -x --no-pager _SYSTEMD_UNIT=bpfoom.service "
                                           f"MESSAGE_ID={MESSAGE_IDS['selection']}").stdout
    assert "Subject: bpfoom policy prefer_b selected an OOM victim" in explained, explained
    assert "hog_b[" in explained.split("Subject:", 1)[1], explained
    listed = fleet.run_on(lab["hook2"], "journalctl --list-catalog").stdout
    assert all(message_id in listed for message_id in MESSAGE_IDS.values()), listed


def agent_holds_its_pins(host, timeout=10):
    """Wait until the running agent holds its pin directory open (its loop polls every 2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fds = fleet.run_on(host, "ls -l /proc/$(systemctl show -p MainPID --value bpfoom.service)/fd", check=False)
        if "/sys/fs/bpf/bpfoom" in fds.stdout:
            return True
        time.sleep(0.5)
    return False


def policies(status):
    return [(p["policy_name"], p["managed"], p["pinned"]) for p in status["policies"]]


def test_bpffs_unmounted_under_a_running_policy_keeps_it_and_its_pins_come_back(lab, agent_lab, hook2_host):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    assert agent_holds_its_pins(host)
    refused = fleet.run_on(host, "umount /sys/fs/bpf", check=False)
    assert refused.returncode != 0 and "target is busy" in refused.stderr, refused
    fleet.run_on(host, "umount -l /sys/fs/bpf")                    # a lazy unmount cannot be refused
    status = bpfoomctl(host, "status")
    assert not status["bpffs"] and status["attached_policy"]["policy_name"] == "prefer_b", status
    assert policies(status) == [("prefer_b", True, False)], status
    # The kernel still runs it: its victim, not the kernel's largest.
    assert hook2_host.oom(96, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])["victim"] == "hog_b"
    # The next apply mounts bpffs; the agent moves its pins there. One policy, pinned, and then no change.
    process, _results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    assert process.returncode == 0, process.stdout[-2000:]
    for _attempt in range(20):
        status = bpfoomctl(host, "status")
        if policies(status) == [("prefer_b", True, True)]:
            break
        time.sleep(0.5)
    assert status["bpffs"] and policies(status) == [("prefer_b", True, True)], status
    process, _results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    assert process.returncode == 0 and changed_count(process) == 0, process.stdout[-2000:]


def test_a_damaged_store_is_refused_naming_the_file_and_the_running_policy_stays(lab, agent_lab):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
    status = bpfoomctl(host, "status")
    stored_c = f"/var/lib/bpfoom/policies/{status['desired_hash']}/policy.bpf.o"
    stored_b = f"/var/lib/bpfoom/policies/{status['rollback_target']['policy_hash']}/policy.bpf.o"
    fleet.run_on(host, f"printf x >> {stored_c}; printf x >> {stored_b}")
    # What a reload (and a boot) re-applies: refused, naming the file; the running policy stays.
    assert fleet.run_on(host, "systemctl reload bpfoom.service", check=False).returncode != 0
    journal = fleet.run_on(host, "journalctl -u bpfoom.service -n 30 --no-pager").stdout
    assert f"{stored_c} has sha256" in journal and "its manifest says" in journal, journal
    status = bpfoomctl(host, "status")
    assert status["attached_policy"]["policy_name"] == "prefer_c"
    assert status["desired_problem"].startswith(f"{stored_c} has sha256"), status
    # A rollback to a damaged copy: refused the same way.
    rollback = fleet.run_on(host, "bpfoomctl rollback", check=False)
    assert rollback.returncode == 5 and f"{stored_b} has sha256" in json.loads(rollback.stdout)["msg"], rollback
    assert bpfoomctl(host, "status")["attached_policy"]["policy_name"] == "prefer_c"
    # The next apply of the same policy stores it again: boot would find it whole.
    process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
    assert process.returncode == 0 and results["Run the policy"]["hook2"]["changed"], process.stdout[-2000:]
    assert any("stored again" in note for note in results["Run the policy"]["hook2"]["notes"]), results
    assert bpfoomctl(host, "status")["desired_problem"] is None
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)        # stores prefer_b again


def test_a_full_state_directory_fails_the_apply_and_changes_nothing(lab, agent_lab):
    """/var/lib/bpfoom on a full 1 MiB tmpfs: the apply fails saying so, prefer_b runs on, what boot
    re-applies is unchanged; once there is room, the same apply converges."""
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    before = bpfoomctl(host, "status")
    entry_c = build_policy(PREFER_C, agent_lab["cache"])
    fleet.run_on(host, "install -d -m 0700 /root/staged-c")
    for name in ("policy.bpf.o", "manifest.json"):
        fleet.copy_to(host, entry_c / name, f"/root/staged-c/{name}")
    fleet.run_on(host, "rm -rf /root/bpfoom-state && cp -a /var/lib/bpfoom /root/bpfoom-state && "
                       "mount -t tmpfs -o size=1m,mode=0700 bpfoom-full /var/lib/bpfoom && "
                       "cp -a /root/bpfoom-state/. /var/lib/bpfoom/ && "
                       "(dd if=/dev/zero of=/var/lib/bpfoom/filler bs=4k 2>/dev/null; true)")
    try:
        process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
        assert process.returncode != 0
        message = results["Run the policy"]["hook2"]["msg"]
        assert "No space left on device" in message and "nothing was changed" in message, message
        # The agent itself, given the policy from elsewhere: its store cannot take the copy.
        agent = fleet.run_on(host, "bpfoomctl apply /root/staged-c", check=False)
        assert agent.returncode == 8, agent
        assert "No space left on device" in json.loads(agent.stdout)["msg"], agent.stdout
        after = bpfoomctl(host, "status")
        assert after["attached_policy"] == before["attached_policy"] and after["desired_hash"] == before["desired_hash"]
        assert after["desired_problem"] is None and len([p for p in after["policies"] if p["attached"]]) == 1
        assert fleet.run_on(host, "ls /var/lib/bpfoom/policies").stdout.split() == \
            fleet.run_on(host, "ls /root/bpfoom-state/policies").stdout.split()          # no half-written copy
        fleet.run_on(host, "rm /var/lib/bpfoom/filler")
        process, _results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
        assert process.returncode == 0, process.stdout[-2000:]
        assert bpfoomctl(host, "status")["attached_policy"]["policy_name"] == "prefer_c"
    finally:
        fleet.run_on(host, "umount /var/lib/bpfoom", check=False)
    # Back on the disk's state directory: the same apply records prefer_c there too.
    process, _results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_C)
    assert process.returncode == 0 and bpfoomctl(host, "status")["desired_problem"] is None


FORGER = ("open('/proc/self/comm', 'w').write('forge\\nPRIO=0')\n"       # a process names itself
          "hog = []\nwhile True: hog.append(bytearray(1 << 20))\n")


def test_a_process_name_cannot_forge_a_journal_field(lab, agent_lab):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    fleet.run_on(host, f"cat > /root/forger.py <<'EOF'\n{FORGER}EOF")
    fleet.run_on(host, "systemd-run --quiet --wait -p MemoryMax=48M -p MemorySwapMax=0 python3 /root/forger.py",
                 check=False)                                     # killed by the memcg OOM, as intended
    for _attempt in range(20):
        lines = fleet.run_on(host, "journalctl -o json --no-pager _SYSTEMD_UNIT=bpfoom.service "
                                   f"MESSAGE_ID={MESSAGE_IDS['selection']}").stdout.splitlines()
        entries = [json.loads(line) for line in lines]
        forged = [e for e in entries if e["BPFOOM_VICTIM_COMM"] == "forge\nPRIO=0"]        # the name, whole
        if forged:
            break
        time.sleep(1)
    assert forged, entries
    entry = forged[-1]
    assert "PRIO" not in entry and entry["PRIORITY"] == "5", entry
    assert "selected forge\\nPRIO=0[" in entry["MESSAGE"], entry["MESSAGE"]


METRICS = "/var/lib/prometheus/node-exporter/bpfoom.prom"


def metric(text, name):
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def wait_for_metrics(host, ready, timeout=30):
    """The agent's metrics file once ready(text) holds (it is rewritten every 10 s)."""
    deadline = time.monotonic() + timeout
    while True:
        text = fleet.run_on(host, f"cat {METRICS}", check=False).stdout
        if text and ready(text):
            return text
        assert time.monotonic() < deadline, text
        time.sleep(1)


@pytest.mark.parametrize("name", HOOK_HOSTS)
def test_the_agent_writes_metrics_for_node_exporter(lab, agent_lab, prepared, name):
    host, lab_host = lab[name], prepared(name)
    # node_exporter's textfile directory, there before the agent starts (its sandbox makes it writable).
    fleet.run_on(host, f"install -d -m 0755 {METRICS.rsplit('/', 1)[0]} && systemctl restart bpfoom.service")
    play(agent_lab, "apply_policy.yml", name, policy=PREFER_B)
    text = wait_for_metrics(host, lambda text: 'policy_name="prefer_b"' in text)
    assert 'bpfoom_policy_info{policy_name="prefer_b",policy_hash="' in text and 'mode="enforce"} 1' in text
    assert metric(text, "bpfoom_hook_present") == 1 and metric(text, "bpfoom_policy_attached") == 1
    selections = metric(text, "bpfoom_policy_selections_total")
    assert lab_host.oom(96, [("hog_a", 60), ("hog_b", 10), ("hog_c", 28)])["victim"] == "hog_b"
    text = wait_for_metrics(host, lambda text: metric(text, "bpfoom_policy_selections_total") > selections)
    assert metric(text, "bpfoom_events_logged_total") >= 1
    assert fleet.run_on(host, f"stat -c %a {METRICS}").stdout.strip() == "644"       # node_exporter reads it


def test_stop_detaches_and_start_reapplies(lab, agent_lab):
    host = lab["hook2"]
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    fleet.run_on(host, "systemctl stop bpfoom.service")
    assert bpfoomctl(host, "status")["attached_policy"] is None
    fleet.run_on(host, "systemctl start bpfoom.service")
    assert bpfoomctl(host, "status")["attached_policy"]["policy_name"] == "prefer_b"


def test_two_concurrent_applies_serialize(lab, agent_lab):
    host = lab["hook2"]
    remotes = []
    for policy in (PREFER_B, PREFER_C):
        entry = build_policy(policy, agent_lab["cache"])
        remote = f"/root/concurrent-{policy['name']}"
        fleet.run_on(host, f"install -d -m 0700 {remote}")
        for name in ("policy.bpf.o", "manifest.json"):
            fleet.copy_to(host, entry / name, f"{remote}/{name}")
        remotes.append(remote)
    fleet.run_on(host, "bpfoomctl detach >/dev/null")
    both = fleet.run_on(host, f"bpfoomctl apply {remotes[0]} > /tmp/a.json & bpfoomctl apply {remotes[1]} > /tmp/b.json & wait; "
                              "cat /tmp/a.json; echo '<>'; cat /tmp/b.json")
    first, second = (json.loads(part) for part in both.stdout.split("<>"))
    # Serialized: one saw no policy before it, the other saw the first one's policy.
    previous = sorted([(first["previous"] or {}).get("policy_name") or "", (second["previous"] or {}).get("policy_name") or ""])
    assert previous[0] == "" and previous[1] in ("prefer_b", "prefer_c"), (first, second)
    status = bpfoomctl(host, "status")
    assert len([p for p in status["policies"] if p["attached"]]) == 1


def test_state_absent_returns_to_the_kernel_default(lab, agent_lab):
    play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B)
    process, results = play(agent_lab, "apply_policy.yml", "hook2", policy=PREFER_B, state="absent")
    assert process.returncode == 0 and results["Run the policy"]["hook2"]["changed"]
    assert bpfoomctl(lab["hook2"], "status")["policies"] == []


@pytest.mark.parametrize("name", NO_HOOK_HOSTS)
def test_unpatched_host_fails_with_hook_missing_and_changes_nothing(lab, agent_lab, name):
    process, results = play(agent_lab, "apply_policy.yml", name, policy=PREFER_B)
    assert process.returncode != 0
    failed = results["Run the policy"][name]
    assert failed["hook_missing"] and not failed.get("changed")
    assert failed["msg"].startswith(f"{name}: the kernel {lab[name]['release']}"), failed["msg"]
    assert "has no BPF OOM hook" in failed["msg"]
    assert fleet.run_on(lab[name], "ls /sys/fs/bpf/bpfoom 2>/dev/null | wc -l").stdout.strip() == "0"
    assert fleet.run_on(lab[name], "ls /var/lib/bpfoom/policies 2>/dev/null | wc -l").stdout.strip() == "0"
    process, results = run_playbook(PLAYBOOKS / "info.yml", fleet.inventory_path(), "--limit", name,
                                    results_dir=agent_lab["work"])
    info = results["Read the host"][name]
    assert info["hook"] is False and info["attached_policy"] is None

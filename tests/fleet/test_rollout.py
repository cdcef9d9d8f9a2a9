"""Lab tier of the fleet playbooks: rollout, verify, rollback, detach (ansible-playbook bpfoom.fleet.NAME).

The session fleet: hook1 and hook2 (group hook, the patched kernel), nohook1
(group nohook, the unpatched one), in that inventory order, so hook1 is the
canary. The hook group runs the demo's web policy (tests/lab/demo/group_vars).
Ansible reaches every host as a normal user with passwordless sudo (the
image's lab-operator): the playbooks' become is proven by every test here.
The tests run in file order, each from the state the one before left, as an
operator's runs follow each other: a failed canary, a rollout, a check-mode
run, a kernel without the hook, verify, rollback and detach; then the faults
(an unreachable host, an interrupted controller, a power cycle), each ending
with the rollout's report.
"""

import json
import os
import re
import shutil
import signal
import threading
import time

import pytest
import yaml

from fleetlab import common, fleet, image
from lab_fleet import PLAYBOOK_HOSTS
from policytools import build_policy, run_playbook

pytestmark = pytest.mark.lab

DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]
GUEST = common.REPO_ROOT / "tests" / "kernel" / "guest"
APPLY = "Apply the policy (agent, bpffs, make-before-break; verified from the kernel)"
NOHOOK = {"name": "legacy", "template": "prefer_avoid", "params": {"avoid": {"cgroup": ["sshd.service"]}}}


@pytest.fixture(scope="module")
def rollout_lab(lab, tmp_path_factory):
    work = tmp_path_factory.mktemp("rollout")
    inventory = fleet.inventory_directory(work / "inventory", {
        "all": {"agent_manage_packages": False, "bpfoom_object_cache": str(work / "objects"),
                "ansible_user": image.SUDO_USER},
        "hook": {"bpfoom_group": "hook", "bpfoom_policy": WEB},
        "nohook": {"bpfoom_group": "nohook", "bpfoom_policy": NOHOOK},
    }, only=PLAYBOOK_HOSTS)
    return {"work": work, "inventory": inventory}


def playbook(rollout_lab, name, *options, during=None, inventory=None, **extra_vars):
    return run_playbook(f"bpfoom.fleet.{name}", inventory or rollout_lab["inventory"], *options,
                        "-e", json.dumps(extra_vars), results_dir=rollout_lab["work"], timeout=1200, during=during)


def rollout(rollout_lab, *options, **extra_vars):
    """Run the rollout playbook; return (process, results, {host: its row of the rollout's JSON report})."""
    report = rollout_lab["work"] / "rollout-report.json"
    report.unlink(missing_ok=True)
    process, results = playbook(rollout_lab, "rollout", *options, bpfoom_report_file=str(report), **extra_vars)
    rows = {row["host"]: row for row in json.loads(report.read_text())} if report.exists() else {}
    return process, results, rows


def recap(process):
    """{host: {ok: N, changed: N, failed: N, ...}} of the fleet's hosts from the play recap (the controller,
    localhost, where the report plays run, is not one of them)."""
    hosts = {}
    for line in process.stdout.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
        if match and match[1] != "localhost":
            hosts[match[1]] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match[2])}
    return hosts


def shown(process, rows):
    """The report as the playbook printed it: each host's line of the table, as {host: line}."""
    lines = {}
    for line in process.stdout.splitlines():
        words = line.strip().strip('",').split()
        if words and words[0] in rows and len(words) > 4:
            lines[words[0]] = line
    return lines


def remote_executions(results):
    """Each host's remote module executions. The controller (localhost), where the report plays run, is left out
    when it executed nothing remotely: its tasks are local."""
    counts = {host: counts["exec"] for host, counts in results["_executions"].items()}
    if counts.get("localhost") == 0:
        del counts["localhost"]
    return counts


def outcomes(rows):
    return {host: (row["outcome"], row["step"]) for host, row in rows.items()}


def wait_for_boot_and_policy(host, old_boot, timeout=240):
    """Once the host answers with a new boot id, the policy its agent attached (see wait_for_policy)."""
    deadline = time.monotonic() + timeout
    while fleet.boot_id(host) in ("", old_boot):
        assert time.monotonic() < deadline, f"{host['name']}: not back after {timeout} s"
        time.sleep(1)
    return wait_for_policy(host)


def wait_for_policy(host, timeout=60):
    """The policy a host's agent attached once its service settled after a boot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = fleet.run_on(host, "systemctl is-active bpfoom.service", check=False).stdout.strip()
        if state in ("active", "failed"):
            break
        time.sleep(1)
    return attached(host)


def attached(host):
    """The policy the kernel runs on a host, as the agent reads it (None without agent or policy)."""
    result = fleet.run_on(host, "bpfoomctl status", check=False)
    if result.returncode != 0:
        return None
    policy = json.loads(result.stdout)["attached_policy"]
    return policy and policy["policy_name"]


def test_a_failed_canary_smoke_test_stops_the_rollout_with_its_report(lab, rollout_lab):
    """The canary's smoke test expects the wrong victim: hook1 stops the rollout, the others stay as they were."""
    before = {name: attached(lab[name]) for name in ("hook2", "nohook1")}
    wrong = dict(WEB, smoke=dict(WEB["smoke"], expect_victim="web-server"))
    process, results, rows = rollout(rollout_lab, bpfoom_group_policies={"hook": wrong})
    assert process.returncode != 0, process.stdout[-3000:]
    assert outcomes(rows) == {"hook1": ("failed", "Provoke a contained memcg OOM and check the victim"),
                              "hook2": ("not reached", None), "nohook1": ("not reached", None)}, rows
    assert rows["hook1"]["detail"] == \
        "smoke test failed: the kernel killed report-gen, the policy should have picked web-server", rows
    assert rows["hook2"]["detail"] == "the rollout stopped after hook1 failed"
    # What each host runs now, read from its kernel, failed and not reached alike.
    assert rows["hook1"]["runs_now"] == attached(lab["hook1"])
    assert rows["hook2"]["runs_now"] == (before["hook2"] or "none") and rows["nohook1"]["runs_now"] == "none (no hook)"
    assert set(shown(process, rows)) == {"hook1", "hook2", "nohook1"}, process.stdout[-3000:]
    assert "1 failed, 2 not reached" in process.stdout
    assert "ROLLOUT STOPPED BEFORE ITS REPORT" not in process.stdout         # the playbook's own report ran
    # Only the canary's batch ran: the other hosts were only read by the report (one execution each).
    assert remote_executions(results) == \
        {"hook1": 3, "hook2": 1, "nohook1": 1}, results["_executions"]          # hook1: apply, smoke, read
    assert {name: attached(lab[name]) for name in ("hook2", "nohook1")} == before


def test_rollout_applies_each_group_then_a_second_run_changes_nothing(lab, rollout_lab):
    process, results, rows = rollout(rollout_lab, bpfoom_unpatched_hosts="skip")
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) == "web" and attached(lab["hook2"]) == "web"
    # The canary's smoke test ran inside its apply task, and only there.
    smoke = {host: result["smoke"] for host, result in results[APPLY].items() if "smoke" in result}
    assert list(smoke) == ["hook1"] and smoke["hook1"]["victim"] == "report-gen", smoke
    assert smoke["hook1"]["policy_name"] == "web"
    assert {host: row["outcome"] for host, row in rows.items()} == \
        {"hook1": "done", "hook2": "done", "nohook1": "skipped"}, rows
    assert rows["hook1"]["detail"].endswith(", canary smoke victim report-gen"), rows
    # The release the lab built (Debian's current 6.12 source), as the host reports it.
    assert rows["nohook1"]["detail"] == f"kernel {lab['nohook1']['release']} has no BPF OOM hook"
    assert rows["hook2"]["runs_now"] == "web" and rows["hook2"]["policy_hash"] == results[APPLY]["hook2"]["policy_hash"]

    start = time.monotonic()
    process, results, rows = rollout(rollout_lab, bpfoom_unpatched_hosts="skip")
    elapsed = time.monotonic() - start
    assert process.returncode == 0, process.stdout[-3000:]
    assert {host: counts["changed"] for host, counts in recap(process).items()} == \
        {"hook1": 0, "hook2": 0, "nohook1": 0}, process.stdout[-3000:]
    assert rows["hook2"]["detail"] == "already running", rows
    # One remote execution per host (counted by tests/callback_plugins/remote_executions.py), the canary's smoke
    # test besides; with pipelining, one SSH session per execution. The report reads nothing again.
    assert remote_executions(results) == \
        {"hook1": 2, "hook2": 1, "nohook1": 1}, results["_executions"]
    assert sorted(results["_ssh_sessions"].values()) == [1, 1, 2], results["_ssh_sessions"]
    assert results["_renders"] == 2                                      # web and legacy, once each
    print(f"second rollout, nothing to change: {elapsed:.0f} s for 3 hosts")


def test_check_mode_predicts_the_swap_and_changes_nothing(lab, rollout_lab):
    newer = dict(WEB, name="web_next", params=dict(WEB["params"], prefer={"comm_prefix": ["report-", "batch-"]}))
    process, results, rows = rollout(rollout_lab, "--check", "--diff", bpfoom_hosts="hook1",
                                     bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0, process.stdout[-3000:]
    applied = results[APPLY]["hook1"]
    assert applied["changed"] and applied["policy_name"] == "web_next", applied
    assert applied["diff"][0]["before"].startswith("policy_name: web\n"), applied["diff"]
    assert applied["diff"][0]["after"].startswith("policy_name: web_next\n"), applied["diff"]
    # The report: what the kernel runs now (web), and what the run would do.
    assert (rows["hook1"]["outcome"], rows["hook1"]["runs_now"], rows["hook1"]["detail"]) == \
        ("would apply", "web", "replaces web"), rows
    assert attached(lab["hook1"]) == "web"


def test_a_host_without_the_hook_fails_the_rollout_by_default(lab, rollout_lab):
    process, _results, rows = rollout(rollout_lab, bpfoom_hosts="nohook1", bpfoom_canary_smoke=False)
    assert process.returncode != 0
    assert outcomes(rows) == {"nohook1": ("failed", APPLY)}, rows
    detail = rows["nohook1"]["detail"]
    assert detail.startswith(f"nohook1: the kernel {lab['nohook1']['release']} has no BPF OOM hook ("), rows
    assert detail.endswith("in the rollout, bpfoom_unpatched_hosts=shadow, or =skip to leave it as it is)"), rows


def test_a_host_without_the_hook_can_run_its_policy_in_shadow_mode(lab, rollout_lab):
    options = dict(bpfoom_hosts="nohook1", bpfoom_canary_smoke=False, bpfoom_unpatched_hosts="shadow")
    process, _results, rows = rollout(rollout_lab, **options)
    assert process.returncode == 0, process.stdout[-3000:]
    assert (rows["nohook1"]["outcome"], rows["nohook1"]["runs_now"], rows["nohook1"]["mode"]) == \
        ("done", "legacy (shadow)", "shadow"), rows
    assert rows["nohook1"]["detail"].endswith("in shadow mode"), rows
    process, _results, rows = rollout(rollout_lab, **options)
    assert process.returncode == 0 and recap(process)["nohook1"]["changed"] == 0, process.stdout[-3000:]
    report = rollout_lab["work"] / "verify-shadow.json"
    process, _results = playbook(rollout_lab, "verify", bpfoom_hosts="nohook1", bpfoom_unpatched_hosts="shadow",
                                 bpfoom_report_file=str(report))
    assert process.returncode == 0, process.stdout[-3000:]
    [row] = json.loads(report.read_text())
    assert row["attached"] and (row["mode"], row["expected_mode"]) == ("shadow", "shadow") and row["would_kill"], row
    assert "WOULD KILL NOW" in process.stdout
    process, _results = playbook(rollout_lab, "detach", bpfoom_hosts="nohook1")
    assert process.returncode == 0 and recap(process)["nohook1"]["changed"] == 1, process.stdout[-3000:]
    assert json.loads(fleet.run_on(lab["nohook1"], "bpfoomctl status").stdout)["attached_policy"] is None


def test_verify_reports_every_host_and_fails_a_mismatch(lab, rollout_lab):
    report = rollout_lab["work"] / "report.json"
    process, _results = playbook(rollout_lab, "verify", bpfoom_unpatched_hosts="skip", bpfoom_report_file=str(report))
    assert process.returncode == 0, process.stdout[-3000:]
    rows = {row["host"]: row for row in json.loads(report.read_text())}
    assert remote_executions(_results) == \
        {"hook1": 1, "hook2": 1, "nohook1": 1}, _results["_executions"]          # read-only, one call each
    assert rows["hook1"]["attached"] and rows["hook1"]["policy_name"] == "web" and rows["hook1"]["group"] == "hook"
    assert rows["hook1"]["policy_hash"] == rows["hook1"]["expected_hash"] and rows["hook1"]["mode"] == "enforce"
    assert rows["hook1"]["would_kill"]["pid"] > 1 and rows["hook1"]["kernel_would_kill"]["pid"] > 1, rows["hook1"]
    assert not rows["nohook1"]["hook"] and not rows["nohook1"]["attached"]
    assert all(counts["changed"] == 0 for counts in recap(process).values()), process.stdout[-3000:]

    # What an AWX survey gives: the map as YAML text.
    other = yaml.safe_dump({"hook": dict(WEB, name="web_next")})
    process, results = playbook(rollout_lab, "verify", bpfoom_unpatched_hosts="skip", bpfoom_group_policies=other)
    assert process.returncode != 0
    failed = results["Fail the hosts that do not run their group's policy"]
    assert failed["hook1"]["msg"].startswith("hook1 runs web, its group hook should run web_next ("), failed
    assert "nohook1" not in failed, failed          # no hook, and told to skip such hosts: it does not fail
    assert attached(lab["hook1"]) == "web"


def test_rollback_returns_to_the_previous_policy_once_and_detach_to_the_kernel(lab, rollout_lab):
    newer = dict(WEB, name="web_next", params=dict(WEB["params"], prefer={"comm_prefix": ["report-", "batch-"]}))
    process, _results = playbook(rollout_lab, "rollout", bpfoom_hosts="hook1", bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) == "web_next"

    # Rolled back from what the map says the group runs now: web_next.
    process, results = playbook(rollout_lab, "rollback", bpfoom_hosts="hook1,nohook1",
                                bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) == "web"
    said = dict(line.split(": ", 1) for line in results["Say what runs now"]["localhost"]["msg"])
    assert said["hook1"].startswith("web_next -> web (") and not said["hook1"].endswith("unchanged"), said
    assert said["nohook1"].endswith(", unchanged"), said
    assert recap(process)["nohook1"]["changed"] == 0
    # Declarative: a second run finds hook1 no longer on web_next and changes nothing.
    process, results = playbook(rollout_lab, "rollback", bpfoom_hosts="hook1", bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0 and recap(process)["hook1"]["changed"] == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) == "web"
    assert results["Say what runs now"]["localhost"]["msg"][0].endswith(", unchanged"), results["Say what runs now"]

    process, _results = playbook(rollout_lab, "detach", bpfoom_hosts="hook1,nohook1")
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) is None
    assert recap(process)["nohook1"]["changed"] == 0
    # Detached means detached across reboots too: the agent forgot the desired policy.
    assert json.loads(fleet.run_on(lab["hook1"], "bpfoomctl status").stdout)["desired_hash"] is None


def test_an_unreachable_host_is_reported_and_its_batch_goes_on(lab, rollout_lab):
    """gone1 (in group hook, nothing answers on its port) fails its batch; hook2 beside it is still done."""
    inventory = rollout_lab["work"] / "inventory-with-gone1"
    shutil.copytree(rollout_lab["inventory"], inventory, dirs_exist_ok=True)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["all"]["children"]["hook"]["hosts"]["gone1"] = {"ansible_port": fleet.assign_ports(1, None)[0]}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))      # gone1 last: not the canary
    report = rollout_lab["work"] / "unreachable.json"
    process, _results = playbook(rollout_lab, "rollout", inventory=inventory, bpfoom_hosts="hook",
                                 bpfoom_batches=[1, "100%"], bpfoom_canary_smoke=False, bpfoom_report_file=str(report))
    assert process.returncode != 0
    rows = {row["host"]: row for row in json.loads(report.read_text())}
    assert outcomes(rows) == {"hook1": ("done", None), "hook2": ("done", None),
                              "gone1": ("unreachable", APPLY)}
    assert "Connection refused" in rows["gone1"]["detail"] and rows["gone1"]["runs_now"] == "unknown (not read)"
    assert rows["hook2"]["runs_now"] == "web"
    assert set(shown(process, rows)) == {"hook1", "hook2", "gone1"}, process.stdout[-3000:]
    # Noted by the rollout, not left to Ansible: no host ends the run unreachable.
    assert "2 done, 1 unreachable" in process.stdout and recap(process)["gone1"]["unreachable"] == 0


def test_an_interrupted_controller_reports_and_leaves_old_or_new(lab, rollout_lab):
    """Ctrl-C during the apply of one batch: the report still prints, every host runs its old policy or
    web_v2, and a second rollout converges."""
    newer = dict(WEB, name="web_v2", params=dict(WEB["params"], prefer={"comm_prefix": ["report-", "cron-"]}))
    before = {name: attached(lab[name]) for name in ("hook1", "hook2")}

    def ctrl_c(process):
        threading.Timer(1.5, os.killpg, (process.pid, signal.SIGINT)).start()

    report = rollout_lab["work"] / "interrupted.json"
    process, _results = playbook(rollout_lab, "rollout", bpfoom_batches=["100%"], bpfoom_canary_smoke=False,
                                 bpfoom_unpatched_hosts="skip", bpfoom_group_policies={"hook": newer},
                                 bpfoom_report_file=str(report), during=(f"TASK [{APPLY}]", ctrl_c))
    assert process.returncode != 0
    assert "ROLLOUT INTERRUPTED (bpfoom.fleet.rollout_report)" in process.stdout, process.stdout[-3000:]
    rows = {row["host"]: row for row in json.loads(report.read_text())}
    assert set(rows) == {"hook1", "hook2", "nohook1"}
    assert set(shown(process, rows)) == {"hook1", "hook2", "nohook1"}, process.stdout[-3000:]
    interrupted = {host for host, row in rows.items() if row["outcome"] == "interrupted"}
    assert interrupted and all(rows[host]["step"] == APPLY for host in interrupted), rows
    runs = {name: attached(lab[name]) for name in ("hook1", "hook2")}
    print(f"interrupted: {sorted(interrupted)} in flight; hosts ran {before}, run {runs}")
    assert all(runs[name] in (before[name], "web_v2") for name in runs), (before, runs)

    process, _results, rows = rollout(rollout_lab, bpfoom_batches=["100%"], bpfoom_canary_smoke=False,
                                      bpfoom_unpatched_hosts="skip", bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0, process.stdout[-3000:]
    assert {name: attached(lab[name]) for name in ("hook1", "hook2")} == {"hook1": "web_v2", "hook2": "web_v2"}


@pytest.mark.parametrize("moment", ["apply_starts", "both_pinned"])
def test_a_host_power_cycled_during_its_apply_comes_back_old_or_new(lab, rollout_lab, moment):
    """hook2 is reset (reboot(2): no sync, no unmount, a power cut for its disk) at a moment of its apply: as
    bpfoomctl apply starts, or once the new policy is pinned beside the old. The rollout reports hook2
    unreachable, hook2 boots on its old policy or the new one, and a second rollout converges."""
    host = lab["hook2"]
    newer = dict(WEB, name=f"web_{moment[:4]}", params=dict(WEB["params"], prefer={"comm_prefix": [moment[:4]]}))
    new_hash = json.loads((build_policy(newer, rollout_lab["work"] / "objects") / "manifest.json").read_text())["hash"]
    before, boot = attached(host), fleet.boot_id(host)
    # A watcher on the host, started before the rollout, resets it the moment the condition holds.
    fleet.copy_to(host, GUEST / "reset_when.py", "/root/reset_when.py")
    condition = {"apply_starts": "apply_starts", "both_pinned": f"exists /sys/fs/bpf/bpfoom/{new_hash}/events"}[moment]
    fleet.run_on(host, f"nohup python3 /root/reset_when.py {condition} >/dev/null 2>&1 &")
    report = rollout_lab["work"] / "power-cycle.json"
    process, _results = playbook(rollout_lab, "rollout", bpfoom_hosts="hook2", bpfoom_canary_smoke=False,
                                 bpfoom_group_policies={"hook": newer}, bpfoom_report_file=str(report))
    assert process.returncode != 0, process.stdout[-3000:]
    rows = {row["host"]: row for row in json.loads(report.read_text())}
    assert outcomes(rows) == {"hook2": ("unreachable", APPLY)}
    came_back = wait_for_boot_and_policy(host, boot)
    print(f"reset at {moment}: hook2 ran {before}, came back on {came_back}")
    assert came_back in {before, newer["name"]}

    process, _results, rows = rollout(rollout_lab, bpfoom_hosts="hook2", bpfoom_canary_smoke=False,
                                      bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(host) == newer["name"] and rows["hook2"]["outcome"] == "done"

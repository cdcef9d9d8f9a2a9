"""Lab tier of the fleet playbooks: rollout, verify, rollback, detach (ansible-playbook bpfoom.fleet.NAME).

The session fleet: hook1 and hook2 (group hook, the patched kernel), nohook1
(group nohook, the unpatched one), in that inventory order, so hook1 is the
canary. The hook group runs the demo's web policy (tests/lab/demo/group_vars).
Ansible reaches every host as a normal user with passwordless sudo (the
image's lab-operator): the playbooks' become is proven by every test here.
The tests run in file order, each from the state the one before left, as an
operator's runs follow each other: a failed canary, a rollout, a check-mode
run, a kernel without the hook, verify, rollback and detach.
"""

import json
import re
import time

import pytest
import yaml

from fleetlab import common, fleet, image
from policytools import run_playbook

pytestmark = pytest.mark.lab

DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]
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
    })
    return {"work": work, "inventory": inventory}


def playbook(rollout_lab, name, *options, **extra_vars):
    return run_playbook(f"bpfoom.fleet.{name}", rollout_lab["inventory"], *options, "-e", json.dumps(extra_vars),
                        results_dir=rollout_lab["work"], timeout=1200)


def recap(process):
    """{host: {ok: N, changed: N, failed: N, ...}} from the play recap."""
    hosts = {}
    for line in process.stdout.splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
        if match:
            hosts[match[1]] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match[2])}
    return hosts


def stop_message(results):
    """{host: message} of the rollout's rescue, up to its advice on batches."""
    stopped = results.get("Stop the rollout, naming the host and the reason", {})
    return {host: result["msg"].split(" (a batch with")[0] for host, result in stopped.items()}


def attached(host):
    """The policy the kernel runs on a host, as the agent reads it (None without agent or policy)."""
    result = fleet.run_on(host, "bpfoomctl status", check=False)
    if result.returncode != 0:
        return None
    policy = json.loads(result.stdout)["attached_policy"]
    return policy and policy["policy_name"]


def test_a_failed_canary_smoke_test_stops_the_rollout(lab, rollout_lab):
    """The canary's smoke test expects the wrong victim: hook1 stops the rollout, hook2 stays as it was."""
    before = {name: attached(lab[name]) for name in ("hook2", "nohook1")}
    wrong = dict(WEB, smoke=dict(WEB["smoke"], expect_victim="web-server"))
    process, results = playbook(rollout_lab, "rollout", bpfoom_group_policies={"hook": wrong})
    assert process.returncode != 0, process.stdout[-3000:]
    assert stop_message(results) == {"hook1": (
        'hook1: rollout stopped at "Provoke a contained memcg OOM and check the victim": smoke test failed: '
        "the kernel killed report-gen, the policy should have picked web-server")}, process.stdout[-3000:]
    # Only the canary's batch ran: the other hosts were built for, never reached.
    assert list(results[APPLY]) == ["hook1"]
    assert {name: attached(lab[name]) for name in ("hook2", "nohook1")} == before


def test_rollout_applies_each_group_then_a_second_run_changes_nothing(lab, rollout_lab):
    process, results = playbook(rollout_lab, "rollout", bpfoom_unpatched_hosts="skip")
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) == "web" and attached(lab["hook2"]) == "web"
    smoke = results["Provoke a contained memcg OOM and check the victim"]
    assert list(smoke) == ["hook1"] and smoke["hook1"]["victim"] == "report-gen", smoke
    assert smoke["hook1"]["policy_name"] == "web"
    outcome = results["Show each host's outcome"]["hook1"]["msg"]
    assert "nohook1: skipped: kernel 6.12.117-unpatched has no BPF OOM hook" in outcome, outcome

    start = time.monotonic()
    process, results = playbook(rollout_lab, "rollout", bpfoom_unpatched_hosts="skip")
    elapsed = time.monotonic() - start
    assert process.returncode == 0, process.stdout[-3000:]
    assert {host: counts["changed"] for host, counts in recap(process).items()} == \
        {"hook1": 0, "hook2": 0, "nohook1": 0}, process.stdout[-3000:]
    # One remote execution per host (counted by tests/callback_plugins/remote_executions.py), the canary's smoke
    # test besides; with pipelining, one SSH session per execution.
    assert {host: counts["exec"] for host, counts in results["_executions"].items()} == \
        {"hook1": 2, "hook2": 1, "nohook1": 1}, results["_executions"]
    assert sorted(results["_ssh_sessions"].values()) == [1, 1, 2], results["_ssh_sessions"]
    assert results["_renders"] == 2                                      # web and legacy, once each
    print(f"second rollout, nothing to change: {elapsed:.0f} s for 3 hosts")


def test_check_mode_predicts_the_swap_and_changes_nothing(lab, rollout_lab):
    newer = dict(WEB, name="web_next", params=dict(WEB["params"], prefer={"comm_prefix": ["report-", "batch-"]}))
    process, results = playbook(rollout_lab, "rollout", "--check", "--diff", bpfoom_hosts="hook1",
                                bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0, process.stdout[-3000:]
    applied = results[APPLY]["hook1"]
    assert applied["changed"] and applied["policy_name"] == "web_next", applied
    assert applied["diff"]["before"].startswith("policy_name: web\n"), applied["diff"]
    assert applied["diff"]["after"].startswith("policy_name: web_next\n"), applied["diff"]
    assert "hook1: would run web_next" in results["Show each host's outcome"]["hook1"]["msg"][0]
    assert attached(lab["hook1"]) == "web"


def test_a_host_without_the_hook_fails_the_rollout_by_default(lab, rollout_lab):
    process, results = playbook(rollout_lab, "rollout", bpfoom_hosts="nohook1", bpfoom_canary_smoke=False)
    assert process.returncode != 0
    assert stop_message(results) == {"nohook1": (
        'nohook1: rollout stopped at "Stop at a host whose kernel lacks the hook": kernel 6.12.117-unpatched '
        "has no BPF OOM hook: boot a kernel carrying it, leave the host out, or set bpfoom_unpatched_hosts=skip")}, \
        process.stdout[-3000:]


def test_verify_reports_every_host_and_fails_a_mismatch(lab, rollout_lab):
    report = rollout_lab["work"] / "report.json"
    process, _results = playbook(rollout_lab, "verify", bpfoom_unpatched_hosts="skip", bpfoom_report_file=str(report))
    assert process.returncode == 0, process.stdout[-3000:]
    rows = {row["host"]: row for row in json.loads(report.read_text())}
    assert {host: counts["exec"] for host, counts in _results["_executions"].items()} == \
        {"hook1": 1, "hook2": 1, "nohook1": 1}, _results["_executions"]          # read-only, one call each
    assert rows["hook1"]["attached"] and rows["hook1"]["policy_name"] == "web" and rows["hook1"]["group"] == "hook"
    assert rows["hook1"]["policy_hash"] == rows["hook1"]["expected_hash"]
    assert not rows["nohook1"]["hook"] and not rows["nohook1"]["attached"]
    assert all(counts["changed"] == 0 for counts in recap(process).values()), process.stdout[-3000:]

    # What an AWX survey gives: the map as YAML text.
    other = yaml.safe_dump({"hook": dict(WEB, name="web_next")})
    process, results = playbook(rollout_lab, "verify", bpfoom_unpatched_hosts="skip", bpfoom_group_policies=other)
    assert process.returncode != 0
    failed = results["Fail the hosts that do not run their group's policy"]
    assert failed["hook1"]["msg"].startswith("hook1 runs web, its group hook should run web_next ("), failed
    assert "skip_reason" in failed["nohook1"], failed      # no hook, and told to skip such hosts
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
    assert "hook1: web_next -> web (" in results["Say what runs now"]["hook1"]["msg"]
    assert recap(process)["nohook1"]["changed"] == 0
    # Declarative: a second run finds hook1 no longer on web_next and changes nothing.
    process, results = playbook(rollout_lab, "rollback", bpfoom_hosts="hook1", bpfoom_group_policies={"hook": newer})
    assert process.returncode == 0 and recap(process)["hook1"]["changed"] == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) == "web" and "unchanged" in results["Say what runs now"]["hook1"]["msg"]

    process, _results = playbook(rollout_lab, "detach", bpfoom_hosts="hook1,nohook1")
    assert process.returncode == 0, process.stdout[-3000:]
    assert attached(lab["hook1"]) is None
    assert recap(process)["nohook1"]["changed"] == 0
    # Detached means detached across reboots too: the agent forgot the desired policy.
    assert json.loads(fleet.run_on(lab["hook1"], "bpfoomctl status").stdout)["desired_hash"] is None

"""Lab tier of the AWX workflow `bpfoom fleet rollout`, node by node as AWX runs it (fleetlab.awx):
each node's extra vars (survey, node data, artifacts), each slice with exactly the hosts AWX gives it.

A fleet of its own, five patched hosts in two policy groups (db1, db2, web1, web2, web3), so that
every stage has hosts: the canaries db1 and web1, a wave of one, the rest sliced over four jobs.
The policies come only from the workflow's survey (the group_vars have none), so a verify that
saw another map than the rollout's would fail.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

from fleetlab import awx, common, fleet

pytestmark = pytest.mark.lab

FLEET = ["db=2", "web=3"]
DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]
DB = yaml.safe_load((DEMO_VARS / "db.yml").read_text())["bpfoom_policy"]
GOOD_MAP = {"db": dict(DB, name="wf_db"), "web": dict(WEB, name="wf_web")}
# The web policy again under another name, whose smoke test expects the wrong victim: its canary fails.
BAD_MAP = {"db": GOOD_MAP["db"], "web": dict(WEB, name="wf_web_bad", smoke=dict(WEB["smoke"], expect_victim="web-server"))}
WORKFLOW = "bpfoom fleet rollout"


@pytest.fixture(scope="module")
def workflow_lab(tmp_path_factory):
    """(lab directory, hosts, inventory) of the workflow's own fleet, stopped whatever the outcome.

    Inside the suite's lab directory when there is one, where `make lab` checks that nothing is left.
    """
    suite_lab = os.environ.get("BPFOOM_TEST_LAB_DIR")
    directory = Path(suite_lab) / "workflow" if suite_lab else tmp_path_factory.mktemp("workflow-lab")
    try:
        with common.other_lab(directory):
            fleet.up(FLEET, memory_mib=768)
            hosts, inventory = fleet.load_fleet()["hosts"], yaml.safe_load(fleet.inventory_path().read_text())
        yield directory, hosts, inventory
    finally:
        with common.other_lab(directory):
            fleet.down()


@pytest.fixture(scope="module")
def controller(workflow_lab, tmp_path_factory):
    _directory, _hosts, inventory = workflow_lab
    # In AWX the collection comes with the execution environment; here, from this checkout.
    return awx.Controller(inventory, {"all": {"agent_manage_packages": False}},
                          tmp_path_factory.mktemp("awx-jobs"), common.REPO_ROOT / "build" / "collections")


def attached(workflow_lab) -> dict:
    """What each host's kernel runs, from its agent: {host: attached_policy}."""
    directory, hosts, _inventory = workflow_lab
    with common.other_lab(directory):
        return {name: json.loads(fleet.run_on(host, "bpfoomctl status").stdout)["attached_policy"]
                for name, host in sorted(hosts.items())}


def rolled_out(job) -> list:
    """The hosts a rollout job took (its report's rows)."""
    return sorted(row["host"] for row in job.artifacts.get("bpfoom_rollout_report", []))


def smoke_victims(job) -> dict:
    return {host: smoke.get("victim") for host, smoke in fleet.canary_smoke_results(job.events).items()}


def summary(run) -> str:
    """Each node, its jobs (hosts, status, seconds), and the end of a failed job's output."""
    lines = []
    for identifier, node in run.nodes.items():
        lines.append(f"{identifier}: {node.status}")
        for job in node.jobs:
            lines.append(f"  job {job.job_id} {job.status} in {job.seconds:.0f} s, slice {job.hosts}, "
                         f"rolled out {rolled_out(job)}")
            if job.status == "failed":
                lines.append(job.stdout[-2500:])
    return "\n".join(lines)


def test_the_workflow_rolls_out_stage_by_stage_and_verify_sees_the_survey_map(controller, workflow_lab):
    run = controller.run_workflow(WORKFLOW, awx.form_answers(awx.workflow(WORKFLOW)["survey_spec"], {
        "bpfoom_group_policies": yaml.safe_dump(GOOD_MAP)}))
    print(summary(run))
    assert run.status == "successful", summary(run)
    assert list(run.nodes) == ["canary", "approve", "wave", "rest", "verify"], summary(run)

    # The canary: one job, never sliced, the first host of each policy, each smoke-tested.
    [canary] = run.nodes["canary"].jobs
    assert rolled_out(canary) == ["db1", "web1"]
    assert smoke_victims(canary) == {"db1": "backup", "web1": "report-gen"}
    proven = canary.artifacts["bpfoom_proven_policies"]
    assert sorted(proven.values()) == ["wf_db", "wf_web"]

    # The wave: 10 % of the three hosts left, rounded up, without smoke test; it got the canary's artifacts.
    [wave] = run.nodes["wave"].jobs
    assert len(rolled_out(wave)) == 1 and rolled_out(wave)[0] in {"db2", "web2", "web3"}
    assert wave.extra_vars["bpfoom_proven_policies"] == proven
    assert not smoke_victims(wave)

    # The rest: four slices, each with the hosts AWX gives it (by name, every fourth), each rolling out
    # to the hosts of its slice the canary and the wave did not take; together, every host left, once.
    rest = sorted(run.nodes["rest"].jobs, key=lambda job: job.hosts)
    assert [job.hosts for job in rest] == [["db1", "web3"], ["db2"], ["web1"], ["web2"]]
    left = sorted({"db2", "web2", "web3"} - set(rolled_out(wave)))
    for job in rest:
        assert rolled_out(job) == sorted(set(job.hosts) & set(left)), summary(run)
    assert sorted(host for job in rest for host in rolled_out(job)) == left
    assert not any(smoke_victims(job) for job in rest)

    # verify, sliced too, against the survey's map and the canary's proven hashes: no drift.
    verify = run.nodes["verify"].jobs
    assert len(verify) == 4 and all(job.status == "successful" for job in verify)
    assert all(job.extra_vars["bpfoom_proven_policies"] == proven for job in verify)

    # And the kernels say so.
    runs = attached(workflow_lab)
    assert {host: policy["policy_name"] for host, policy in runs.items()} == {
        "db1": "wf_db", "db2": "wf_db", "web1": "wf_web", "web2": "wf_web", "web3": "wf_web"}
    assert {policy["policy_hash"] for policy in runs.values()} == set(proven)


def test_a_failed_canary_stops_the_workflow_and_the_rollback_edge_takes_it_back(controller, workflow_lab):
    before = attached(workflow_lab)
    run = controller.run_workflow(WORKFLOW, awx.form_answers(awx.workflow(WORKFLOW)["survey_spec"], {
        "bpfoom_group_policies": yaml.safe_dump(BAD_MAP)}))
    print(summary(run))

    # The canary failed on web1 (its smoke test's victim was not the one expected); nothing past it ran.
    assert list(run.nodes) == ["canary", "rollback"], summary(run)
    [canary] = run.nodes["canary"].jobs
    assert canary.status == "failed"
    assert smoke_victims(canary) == {"db1": "backup", "web1": "report-gen"}
    rows = {row["host"]: row for row in canary.artifacts["bpfoom_rollout_report"]}
    assert (rows["web1"]["outcome"], rows["db1"]["outcome"]) == ("failed", "done"), rows
    assert rows["web1"]["runs_now"] == "wf_web_bad"

    # The rollback node took back only web1, then failed on purpose: the workflow reads as failed.
    [rollback] = run.nodes["rollback"].jobs
    back = [event["event_data"]["host"] for event in rollback.events if event["event"] == "runner_on_ok"
            and event["event_data"].get("task") == "Go back from the policy (make-before-break; verified from the kernel)"]
    assert back == ["web1"], summary(run)
    assert "The rollout failed on web1" in rollback.stdout
    assert rollback.status == "failed" and run.status == "failed"

    # Every host runs what it ran before the workflow: web1 its previous policy again, the others
    # untouched (the same programs and links).
    after = attached(workflow_lab)
    assert after["web1"]["policy_hash"] == before["web1"]["policy_hash"]
    assert {host: policy for host, policy in after.items() if host != "web1"} == \
        {host: policy for host, policy in before.items() if host != "web1"}

"""Lab tier of the AWX job templates: the rollout template run through ansible-runner, as AWX runs a job.

AWX gives a job a private data directory: the project checkout, the inventory,
and the survey's answers as extra vars. fleetlab.awx builds one from
awx/job_templates.yml (the template's playbook and its survey, answered the
way an operator would: defaults, plus a policy map as YAML text); this test
asserts the outcome on the lab hosts. The workflow: test_awx_workflow.py.
"""

import json

import pytest
import yaml

from fleetlab import awx, common, fleet
from lab_fleet import PLAYBOOK_HOSTS

pytestmark = pytest.mark.lab

DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]


def test_rollout_job_template_through_ansible_runner(lab, tmp_path):
    template = awx.job_template("bpfoom rollout")
    extra_vars = awx.survey_answers(template["survey_spec"], awx.form_answers(template["survey_spec"], {
        "bpfoom_group_policies": yaml.safe_dump({
            "hook": dict(WEB, name="awx_web"),
            "nohook": {"name": "awx_legacy", "template": "prefer_avoid", "params": {"avoid": {"uid": [0]}}}}),
        "bpfoom_unpatched_hosts": "skip",
    }), launch=True)
    # In AWX the collection comes with the execution environment; here, from this checkout.
    inventory = fleet.inventory_directory(tmp_path / "lab-inventory", {}, only=PLAYBOOK_HOSTS) / "hosts.yml"
    controller = awx.Controller(yaml.safe_load(inventory.read_text()),
                                {"all": {"agent_manage_packages": False}}, tmp_path,
                                common.REPO_ROOT / "build" / "collections")
    [job] = controller.run_job(template["name"], extra_vars)
    assert job.status == "successful", job.stdout[-3000:]

    smoke = fleet.canary_smoke_results(job.events)
    assert [result["victim"] for result in smoke.values()] == ["report-gen"], smoke
    # The report as AWX keeps it: the job's artifact bpfoom_rollout_report, one row per host.
    rows = {row["host"]: row for row in job.artifacts["bpfoom_rollout_report"]}
    assert {host: (row["outcome"], row["runs_now"]) for host, row in rows.items()} == {
        "hook1": ("done", "awx_web"), "hook2": ("done", "awx_web"), "nohook1": ("skipped", "none (no hook)")}, rows
    for name in ("hook1", "hook2"):
        status = json.loads(fleet.run_on(lab[name], "bpfoomctl status").stdout)
        assert status["attached_policy"]["policy_name"] == "awx_web", (name, status["attached_policy"])

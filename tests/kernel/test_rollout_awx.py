"""Lab tier of the AWX job templates: the rollout template run through ansible-runner, as AWX runs a job.

AWX gives a job a private data directory: the project checkout, the inventory,
and the survey's answers as extra vars. This test builds one from
awx/job_templates.yml (the template's playbook and its survey, answered the
way an operator would: defaults, plus a policy map as YAML text) and asserts
the outcome on the lab hosts.
"""

import json
import shutil

import ansible_runner
import pytest
import yaml

from fleetlab import common, fleet

pytestmark = pytest.mark.lab

JOB_TEMPLATES = yaml.safe_load((common.REPO_ROOT / "awx" / "job_templates.yml").read_text())
DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]


def job_template(name):
    return next(template for template in JOB_TEMPLATES["controller_templates"] if template["name"] == name)


def survey_answers(template, answers):
    """The extra vars AWX would pass: defaults, then the answers, checked against the survey as AWX does."""
    extra_vars = {}
    for question in template["survey_spec"]["spec"]:
        value = answers.get(question["variable"], question.get("default"))
        if question.get("required"):
            assert value not in (None, ""), f"{question['variable']} is required"
        if question["type"] == "multiplechoice":
            assert value in question["choices"], f"{question['variable']}: {value!r} not in {question['choices']}"
        if question["type"] == "integer":
            assert question.get("min", value) <= value <= question.get("max", value), question["variable"]
        extra_vars[question["variable"]] = value
    unknown = set(answers) - set(extra_vars)
    assert not unknown, f"answers to no question: {unknown}"
    return extra_vars


def test_rollout_job_template_through_ansible_runner(lab, tmp_path):
    template = job_template("bpfoom rollout")
    extra_vars = survey_answers(template, {
        "bpfoom_group_policies": yaml.safe_dump({
            "hook": dict(WEB, name="awx_web"),
            "nohook": {"name": "awx_legacy", "template": "prefer_avoid", "params": {"avoid": {"uid": [0]}}}}),
        "bpfoom_unpatched_hosts": "skip",
    })
    data = tmp_path / "job"
    # The project holds only the thin playbooks; the playbook they import is the collection's.
    shutil.copytree(common.REPO_ROOT / "awx" / "playbooks", data / "project" / "awx" / "playbooks")
    fleet.inventory_directory(data / "inventory", {
        "all": {"agent_manage_packages": False, "bpfoom_object_cache": str(tmp_path / "objects")}})
    (data / "env").mkdir()
    (data / "env" / "extravars").write_text(yaml.safe_dump(extra_vars))
    # In AWX the collection comes with the execution environment; here, from this checkout.
    (data / "env" / "envvars").write_text(yaml.safe_dump(
        {"ANSIBLE_COLLECTIONS_PATH": str(common.REPO_ROOT / "build" / "collections")}))

    run = ansible_runner.run(private_data_dir=str(data), playbook=template["playbook"], quiet=True,
                             timeout=1200)
    assert run.status == "successful" and run.rc == 0, run.stdout.read()[-3000:]
    assert not run.stats["failures"] and not run.stats["dark"], run.stats

    smoke = [event["event_data"]["res"] for event in run.events
             if event["event"] == "runner_on_ok"
             and event["event_data"].get("task") == "Provoke a contained memcg OOM and check the victim"]
    assert [result["victim"] for result in smoke] == ["report-gen"], smoke
    # The report as AWX keeps it: the job's artifact bpfoom_rollout_report, one row per host.
    stats = next(event for event in run.events if event["event"] == "playbook_on_stats")
    rows = {row["host"]: row for row in stats["event_data"]["artifact_data"]["bpfoom_rollout_report"]}
    assert {host: (row["outcome"], row["runs_now"]) for host, row in rows.items()} == {
        "hook1": ("done", "awx_web"), "hook2": ("done", "awx_web"), "nohook1": ("skipped", "none (no hook)")}, rows
    for name in ("hook1", "hook2"):
        status = json.loads(fleet.run_on(lab[name], "bpfoomctl status").stdout)
        assert status["attached_policy"]["policy_name"] == "awx_web", (name, status["attached_policy"])

"""fleetlab.awx's model of AWX (slicing, a node's variables, the workflow's graph) with fake jobs.

The lab tier runs the real jobs (tests/fleet/test_awx_workflow.py); these pin down the rules
taken from AWX's source, one by one.
"""

import pytest

from fleetlab import awx

WORKFLOW = "bpfoom fleet rollout"
ANSWERS = awx.form_answers(awx.workflow(WORKFLOW)["survey_spec"])      # a launch from AWX's form, defaults kept


class FakeController(awx.Controller):
    """Jobs that do not run: each node's outcome and artifacts are given, its variables recorded."""

    def __init__(self, outcomes=None, artifacts=None):
        super().__init__({"all": {"children": {}}}, {}, None, None)
        self.outcomes, self.artifacts, self.launched = outcomes or {}, artifacts or {}, []

    def run_job(self, template_name, extra_vars, *, job_slice_count=1, limit=None, workflow_job_id=None):
        node = extra_vars.get("bpfoom_stage") or template_name
        self.launched.append((node, dict(extra_vars)))
        return [awx.Job(name=template_name, job_id=len(self.launched), hosts=[], extra_vars=extra_vars,
                        status=self.outcomes.get(node, "successful"), artifacts=self.artifacts.get(node, {}),
                        stdout="", seconds=0.0, events=[])]


def test_slices_are_every_nth_host_by_name_as_awx_cuts_them():
    hosts = ["web3", "db1", "web1", "db2", "web2"]
    assert [awx.slice_hosts(hosts, number, 2) for number in (1, 2)] == [["db1", "web1", "web3"], ["db2", "web2"]]
    assert [awx.slice_hosts(hosts, number, 4) for number in (1, 2, 3, 4)] == [
        ["db1", "web3"], ["db2"], ["web1"], ["web2"]]
    assert awx.slice_hosts(hosts, 1, 1) == sorted(hosts)


def test_a_sliced_inventory_keeps_every_group_with_only_the_slices_hosts():
    inventory = {"all": {"vars": {"x": 1}, "children": {
        "web": {"hosts": {"web1": {"ansible_port": 1}, "web2": {"ansible_port": 2}}}, "db": {"hosts": {"db1": {}}}}}}
    assert awx.sliced_inventory(inventory, ["web2"]) == {"all": {"vars": {"x": 1}, "children": {
        "web": {"hosts": {"web2": {"ansible_port": 2}}}, "db": {"hosts": {}}}}}
    assert awx.inventory_hosts(inventory) == ["db1", "web1", "web2"]


def test_the_whole_workflow_runs_in_order_when_every_node_succeeds():
    controller = FakeController()
    run = controller.run_workflow(WORKFLOW, ANSWERS)
    assert list(run.nodes) == ["canary", "approve", "wave", "rest", "verify"] and run.status == "successful"


def test_a_node_gets_its_data_then_the_artifacts_before_it_then_the_survey_which_wins():
    controller = FakeController(artifacts={
        "canary": {"bpfoom_canary_hosts": ["db1"], "bpfoom_wave_percent": 99, "bpfoom_batches": "1"}})
    controller.run_workflow(WORKFLOW, {**ANSWERS, "bpfoom_wave_percent": 20})
    wave = dict(controller.launched)["wave"]
    assert wave["bpfoom_canary_hosts"] == ["db1"]          # an artifact of the canary
    assert wave["bpfoom_wave_percent"] == 20                # the survey's answer above the artifact
    assert wave["bpfoom_batches"] == "1"                    # an artifact above the node's own data (AWX's order)
    assert "bpfoom_canary_hosts" in dict(controller.launched)["bpfoom verify"]   # through the approval and every node


@pytest.mark.parametrize("failed", ["canary", "wave", "rest"])
def test_a_failed_stage_goes_to_rollback_and_nothing_after_it_runs(failed):
    controller = FakeController(outcomes={failed: "failed", "bpfoom rollback": "failed"})
    run = controller.run_workflow(WORKFLOW, ANSWERS)
    order = ["canary", "approve", "wave", "rest"]
    assert list(run.nodes) == order[:order.index(failed) + 1] + ["rollback"]
    assert dict(controller.launched)["bpfoom rollback"]["bpfoom_rollback_failed_hosts"] is True
    assert run.status == "failed"


def test_a_rollback_that_succeeds_would_make_the_workflow_look_green():
    # AWX fails a workflow only where a failed node has no failure path: why the rollback node fails on purpose.
    run = FakeController(outcomes={"canary": "failed"}).run_workflow(WORKFLOW, ANSWERS)
    assert list(run.nodes) == ["canary", "rollback"] and run.status == "successful"


def test_a_denied_approval_fails_the_workflow_after_the_canary():
    run = FakeController().run_workflow(WORKFLOW, ANSWERS, approve=False)
    assert list(run.nodes) == ["canary", "approve"] and run.status == "failed"


def test_survey_answers_are_checked_as_awx_checks_them():
    survey = awx.workflow(WORKFLOW)["survey_spec"]
    assert awx.survey_answers(survey, {}, launch=False)["bpfoom_wave_percent"] == 10     # a node's job: defaults
    with pytest.raises(AssertionError, match="not in"):
        awx.survey_answers(survey, {**ANSWERS, "bpfoom_unpatched_hosts": "ignore"}, launch=True)
    with pytest.raises(AssertionError, match="answers to no question"):
        awx.survey_answers(survey, {**ANSWERS, "bpfoom_stage": "rest"}, launch=True)


def test_a_launch_must_answer_every_required_question_whatever_its_default():
    # As AWX 24.6.1 refused the schedule: {'variables_needed_to_start': ["'bpfoom_verify_smoke' value missing", ...]}
    survey = awx.workflow(WORKFLOW)["survey_spec"]
    with pytest.raises(AssertionError, match="bpfoom_wave_percent, bpfoom_max_fail_percentage, "
                                             "bpfoom_unpatched_hosts value missing"):
        awx.survey_answers(survey, {"bpfoom_hosts": "all"}, launch=True)
    assert awx.survey_answers(survey, ANSWERS, launch=True)["bpfoom_group_policies"] == ""    # not required


def test_the_shipped_schedule_answers_every_required_question_of_its_template():
    for schedule in awx.definitions()["controller_schedules"]:
        template = awx.job_template(schedule["unified_job_template"])
        awx.survey_answers(template["survey_spec"], schedule.get("extra_data", {}), launch=True)

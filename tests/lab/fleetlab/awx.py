"""AWX's job templates and workflows of awx/job_templates.yml, run as AWX runs them, with ansible-runner.

No AWX runs on the project's machines. What AWX does around each job is small, and it is written
here from AWX's own source (ansible/awx at e21dd0a, October 2024), so the lab tier can run the
collection's job templates and workflow node by node against lab hosts:

- A job is ansible-runner on a private data directory: the project, the inventory, the extra vars.
- Extra vars (WorkflowJobNode.get_job_kwargs, awx/main/models/workflow.py): the node's own
  extra_data, updated by the artifacts (set_stats) of the jobs before it on its path, updated by the
  workflow's extra vars (its survey), which win. A job template's survey then fills in the defaults
  of its questions nobody answered. AWX adds awx_job_id and awx_workflow_job_id.
- Launches and schedules (seen on a real AWX 24.6.1, issue 24): an API launch of a job template or a
  workflow, and a schedule's extra_data, must answer every required survey question, defaults or
  not; AWX refuses them otherwise ("'bpfoom_verify_smoke' value missing"). Only a job a workflow
  node starts has its survey's defaults fill in for it.
- Slicing (Inventory.get_sliced_hosts and get_script_data, awx/main/models/inventory.py;
  JobTemplate.get_effective_slice_ct, jobs.py): the inventory's enabled hosts ordered by name, slice
  N of C gets hosts[N-1::C]; C is at most the number of hosts. Each slice is a job of its own with
  an inventory of only its hosts, and the slices run at the same time. The sliced job fails if a
  slice fails; its artifacts are the slices' merged key by key in the order they finished
  (WorkflowJob.get_effective_artifacts).
- The workflow (awx/main/scheduler/dag_workflow.py): a node runs once a parent's edge for that
  parent's outcome (success, failure, always) leads to it and every parent is decided; the others
  are never run. The workflow fails when a failed node has no failure or always edge.
- An approval node succeeds when approved and fails when denied or timed out.
"""

from __future__ import annotations

import copy
import itertools
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ansible_runner
import yaml

from . import common

DEFINITIONS = common.REPO_ROOT / "awx" / "job_templates.yml"
_job_ids = itertools.count(1000)


def definitions() -> dict:
    return yaml.safe_load(DEFINITIONS.read_text())


def job_template(name: str) -> dict:
    return next(template for template in definitions()["controller_templates"] if template["name"] == name)


def workflow(name: str) -> dict:
    return next(flow for flow in definitions()["controller_workflows"] if flow["name"] == name)


def survey_answers(survey_spec: dict, answers: dict, *, launch: bool) -> dict:
    """The extra vars a survey gives: its defaults, then the answers, checked against it as AWX checks them.

    launch: an API launch or a schedule, which must answer every required question itself (its default is
    no answer); otherwise a job a workflow node starts, whose unanswered questions take their defaults.
    """
    if launch:
        missing = [question["variable"] for question in survey_spec["spec"]
                   if question.get("required") and question["variable"] not in answers]
        assert not missing, f"{survey_spec['name']}: AWX refuses the launch: {', '.join(missing)} value missing"
    extra_vars = {}
    for question in survey_spec["spec"]:
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


def form_answers(survey_spec: dict, answers: dict | None = None) -> dict:
    """What AWX's launch form submits: each question's default, as the form shows it, then the answers typed."""
    return {**{question["variable"]: question["default"] for question in survey_spec["spec"] if "default" in question},
            **(answers or {})}


def slice_hosts(hosts, number: int, count: int) -> list:
    """The hosts of slice `number` (from 1) of `count`: AWX's Inventory.get_sliced_hosts, hosts by name."""
    ordered = sorted(hosts)
    return ordered[number - 1::count] if count > 1 and number > 0 else ordered


def inventory_hosts(inventory: dict) -> list:
    return sorted({host for group in inventory["all"]["children"].values() for host in group["hosts"] or {}})


def sliced_inventory(inventory: dict, hosts) -> dict:
    """The inventory AWX gives a slice: every group, with only the slice's hosts."""
    inventory = copy.deepcopy(inventory)
    for group in inventory["all"]["children"].values():
        group["hosts"] = {name: host for name, host in (group["hosts"] or {}).items() if name in hosts}
    return inventory


@dataclass
class Job:
    """One AWX job: one ansible-runner run."""
    name: str
    job_id: int
    hosts: list
    extra_vars: dict
    status: str
    artifacts: dict
    stdout: str
    seconds: float
    events: list = field(repr=False)


@dataclass
class NodeRun:
    identifier: str
    status: str                  # successful | failed
    jobs: list                   # one per slice; none for an approval node
    extra_vars: dict = field(default_factory=dict)

    @property
    def artifacts(self) -> dict:
        merged = {}
        for job in self.jobs:                    # in the order they finished
            merged.update(job.artifacts)
        return merged


@dataclass
class WorkflowRun:
    nodes: dict                  # identifier -> NodeRun, in the order they ran
    status: str


class Controller:
    """Runs job templates and workflows of awx/job_templates.yml against one inventory, as AWX would.

    inventory: the inventory as a dict (hosts.yml); group_vars: {group: variables}; work_dir: where each
    job's private data directory goes. collections: where ansible-runner finds bpfoom.fleet (in AWX,
    inside the execution environment).
    """

    def __init__(self, inventory: dict, group_vars: dict, work_dir: Path, collections: Path):
        self.inventory, self.group_vars, self.work_dir, self.collections = inventory, group_vars, work_dir, collections
        self.log = []                # (job name, slice hosts, status), in the order the jobs finished

    def run_job(self, template_name: str, extra_vars: dict, *, job_slice_count: int = 1, limit=None,
                workflow_job_id=None) -> list:
        """Launch a job template: one job, or one per slice. Returns the jobs, in the order they finished."""
        template = job_template(template_name)
        hosts = inventory_hosts(self.inventory)
        count = min(job_slice_count or template.get("job_slice_count", 1), len(hosts))
        slices = [slice_hosts(hosts, number, count) for number in range(1, count + 1)]
        finished, lock = [], threading.Lock()

        def run_slice(slice_hosts_):
            job = self._run(template, extra_vars, slice_hosts_, limit, workflow_job_id)
            with lock:
                finished.append(job)

        threads = [threading.Thread(target=run_slice, args=(members,)) for members in slices]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return finished

    def _run(self, template, extra_vars, hosts, limit, workflow_job_id) -> Job:
        job_id = next(_job_ids)
        data = self.work_dir / f"job-{job_id}"
        # The project holds only the thin playbooks; the playbook they import is the collection's.
        shutil.copytree(common.REPO_ROOT / "awx" / "playbooks", data / "project" / "awx" / "playbooks")
        (data / "inventory" / "group_vars").mkdir(parents=True)
        (data / "inventory" / "hosts.yml").write_text(yaml.safe_dump(sliced_inventory(self.inventory, hosts)))
        # Each job starts with an empty compile cache, as in a fresh execution environment container.
        group_vars = {**self.group_vars,
                      "all": {"bpfoom_object_cache": str(data / "objects"), **self.group_vars.get("all", {})}}
        for group, variables in group_vars.items():
            (data / "inventory" / "group_vars" / f"{group}.yml").write_text(yaml.safe_dump(variables))
        # A template's survey fills in the questions nobody answered; AWX's own variables come last.
        job_vars = {**survey_answers(template["survey_spec"], {}, launch=False), **extra_vars} if template.get("survey_spec") \
            else dict(extra_vars)
        job_vars.update({"awx_job_id": job_id, "tower_job_id": job_id})
        if workflow_job_id is not None:
            job_vars["awx_workflow_job_id"] = workflow_job_id
        (data / "env").mkdir()
        (data / "env" / "extravars").write_text(yaml.safe_dump(job_vars))
        (data / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_COLLECTIONS_PATH": str(self.collections)}))
        start = time.monotonic()
        run = ansible_runner.run(private_data_dir=str(data), playbook=template["playbook"], limit=limit,
                                 quiet=True, timeout=1800)
        events = list(run.events)
        stats = next((event for event in events if event["event"] == "playbook_on_stats"), {})
        job = Job(name=template["name"], job_id=job_id, hosts=hosts, extra_vars=job_vars,
                  status="successful" if run.status == "successful" and run.rc == 0 else "failed",
                  artifacts=stats.get("event_data", {}).get("artifact_data") or {},
                  stdout=run.stdout.read(), seconds=time.monotonic() - start, events=events)
        self.log.append((template["name"], hosts, job.status))
        return job

    def run_workflow(self, name: str, answers: dict, approve: bool = True) -> WorkflowRun:
        """Launch a workflow job template with its survey answered; approval nodes get `approve`."""
        flow = workflow(name)
        workflow_vars = survey_answers(flow["survey_spec"], answers, launch=True)
        workflow_job_id = next(_job_ids)
        nodes = {node["identifier"]: node for node in flow["workflow_nodes"]}
        edges = {identifier: node.get("related", {}) for identifier, node in nodes.items()}
        parents = {identifier: [(parent, kind) for parent, related in edges.items()
                                for kind, children in related.items() for child in children
                                if child["identifier"] == identifier] for identifier in nodes}
        runs, not_run = {}, set()
        while True:
            decided = set(runs) | not_run
            ready = [identifier for identifier in nodes if identifier not in decided
                     and all(parent in decided for parent, _kind in parents[identifier])]
            if not ready:
                break
            for identifier in ready:
                if parents[identifier] and not any(self._edge_fires(runs.get(parent), kind)
                                                   for parent, kind in parents[identifier]):
                    not_run.add(identifier)
                    continue
                # The artifacts of every job before this node on its path, the nearest last.
                artifacts = {}
                for parent in self._ancestors(identifier, parents, runs):
                    artifacts.update(runs[parent].artifacts)
                runs[identifier] = self._run_node(nodes[identifier], artifacts, workflow_vars, approve,
                                                  workflow_job_id)
        failed = any(run.status == "failed" and not any(edges[identifier].get(kind)
                                                        for kind in ("failure_nodes", "always_nodes"))
                     for identifier, run in runs.items())
        return WorkflowRun(nodes=runs, status="failed" if failed else "successful")

    @staticmethod
    def _edge_fires(run, kind) -> bool:
        if run is None:
            return False
        return kind == "always_nodes" or (kind == "success_nodes") == (run.status == "successful")

    @staticmethod
    def _ancestors(identifier, parents, runs) -> list:
        """The nodes that ran before this one on its path, farthest first."""
        path, frontier = [], [parent for parent, _kind in parents[identifier] if parent in runs]
        while frontier:
            node = frontier.pop()
            if node not in path:
                path.insert(0, node)
                frontier += [parent for parent, _kind in parents[node] if parent in runs]
        return path

    def _run_node(self, node, artifacts, workflow_vars, approve, workflow_job_id) -> NodeRun:
        template = node["unified_job_template"]
        if template["type"] == "workflow_approval":
            return NodeRun(node["identifier"], "successful" if approve else "failed", [])
        extra_vars = {**node.get("extra_data", {}), **artifacts, **workflow_vars}
        jobs = self.run_job(template["name"], extra_vars, job_slice_count=node.get("job_slice_count", 1),
                            limit=node.get("limit"), workflow_job_id=workflow_job_id)
        status = "successful" if all(job.status == "successful" for job in jobs) else "failed"
        return NodeRun(node["identifier"], status, jobs, extra_vars)

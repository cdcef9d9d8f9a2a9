"""Lab tier of the execution environment: ee/execution-environment.yml built for real with podman
(tests/lab/fleetlab/ee.py), and the rollout run inside it by ansible-runner --process-isolation, as AWX
runs a job: the project holds only awx/playbooks, the playbook, modules and compiler come from the image.
"""

import json
import shutil

import ansible_runner
import pytest
import yaml

from fleetlab import common, ee, fleet
from lab_fleet import PLAYBOOK_HOSTS

pytestmark = pytest.mark.lab

DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]
IMAGE_COLLECTION = "/usr/share/ansible/collections/ansible_collections/bpfoom/fleet"


def test_the_rollout_runs_inside_the_execution_environment(lab, tmp_path, monkeypatch):
    tag = ee.image()
    data = tmp_path / "job"
    shutil.copytree(common.REPO_ROOT / "awx" / "playbooks", data / "project" / "awx" / "playbooks")
    fleet.inventory_directory(data / "inventory", {
        "all": {"agent_manage_packages": False}, "hook": {"bpfoom_policy": dict(WEB, name="ee_web")}},
        only=PLAYBOOK_HOSTS)
    (data / "env").mkdir()
    # hook2: the agent tests' host (hook1 stays free of agent policies for the hook tests).
    (data / "env" / "extravars").write_text(yaml.safe_dump({"bpfoom_hosts": "hook2"}))
    monkeypatch.setenv("CONTAINERS_CONF", ee.podman_env()["CONTAINERS_CONF"])
    ssh_dir = fleet.ssh_key().parent
    try:
        run = ansible_runner.run(
            private_data_dir=str(data), playbook="awx/playbooks/rollout.yml", quiet=True, timeout=1200,
            process_isolation=True, process_isolation_executable="podman", container_image=tag,
            # The lab's hosts listen on this machine's loopback; its key is mounted where the inventory says.
            # As root in the container: rootful podman maps no user namespace, and the job's files (the
            # private data directory, the key) are root's, as AWX's are its own user's.
            container_options=["--network=host", "--user=root"], container_volume_mounts=[f"{ssh_dir}:{ssh_dir}:ro"])
        assert run.status == "successful" and run.rc == 0, run.stdout.read()[-3000:]
        status = json.loads(fleet.run_on(lab["hook2"], "bpfoomctl status").stdout)
    finally:
        fleet.run_on(lab["hook2"], "bpfoomctl detach > /dev/null 2>&1", check=False)

    # What ran is the image's collection: its playbook, and the policy compiled by the image's clang.
    started = next(event for event in run.events if event["event"] == "playbook_on_start")
    assert started["event_data"]["playbook"] == "awx/playbooks/rollout.yml"
    tasks = {event["event_data"].get("task_path", "").split(":")[0] for event in run.events
             if event["event"] == "playbook_on_task_start"}
    assert f"{IMAGE_COLLECTION}/playbooks/rollout.yml" in tasks, sorted(tasks)
    smoke = fleet.canary_smoke_results(run.events)
    assert [result["victim"] for result in smoke.values()] == ["report-gen"], smoke
    assert status["attached_policy"]["policy_name"] == "ee_web", status["attached_policy"]

"""Lab tier of issue 24: ansible-navigator, the tool users run an execution environment with.

The project's own ansible-navigator.yml, unchanged but for the image's lab tag: `ansible-navigator run
bpfoom.fleet.verify --mode stdout` runs the collection's verify inside the execution environment
(ee/execution-environment.yml, built for real: tests/lab/fleetlab/ee.py) against a lab host that
runs its group's policy, and prints verify's table.
"""

import os
import re
import subprocess

import pytest
import yaml

from fleetlab import common, ee, fleet
from lab_fleet import PLAYBOOK_HOSTS
from policytools import run_playbook

pytestmark = pytest.mark.lab

DEMO_VARS = common.REPO_ROOT / "tests" / "lab" / "demo" / "group_vars"
WEB = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]


def test_ansible_navigator_runs_verify_inside_the_execution_environment(lab, tmp_path, monkeypatch):
    tag = ee.image()
    inventory = fleet.inventory_directory(tmp_path / "inventory", {
        "all": {"agent_manage_packages": False}, "hook": {"bpfoom_policy": dict(WEB, name="nav_web")}},
        only=PLAYBOOK_HOSTS)
    # hook2 runs its group's policy (rolled out from this checkout): what verify must find.
    process, _results = run_playbook("bpfoom.fleet.rollout", inventory, "-e", "bpfoom_hosts=hook2",
                                     "-e", "bpfoom_canary_smoke=false", results_dir=tmp_path)
    assert process.returncode == 0, process.stdout[-3000:]
    monkeypatch.setenv("CONTAINERS_CONF", ee.podman_env()["CONTAINERS_CONF"])
    # ansible-navigator refuses podman without the POSIX message queue directory, which a container host has
    # and this machine lacks (it is mounted into the container): made here, empty, as its error advises.
    os.makedirs("/dev/mqueue", exist_ok=True)
    ssh_dir = fleet.ssh_key().parent
    try:
        navigator = subprocess.run(
            ["ansible-navigator", "run", "bpfoom.fleet.verify", "--mode", "stdout", "-i", str(inventory),
             "--eei", tag, "--pp", "never",
             # The lab's hosts listen on this machine's loopback, with a key of the lab's; as in test_ee.
             "--co=--network=host", "--co=--user=root", "--eev", f"{ssh_dir}:{ssh_dir}:ro",
             "-e", "bpfoom_hosts=hook2"],
            cwd=common.REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    finally:
        fleet.run_on(lab["hook2"], "bpfoomctl detach > /dev/null 2>&1", check=False)
    print(navigator.stdout[-4000:], navigator.stderr[-2000:])
    assert navigator.returncode == 0, navigator.stdout[-3000:] + navigator.stderr[-2000:]
    # verify's table: its header, and hook2's row naming the policy it runs.
    lines = navigator.stdout.splitlines()
    assert any("HOST" in line and "POLICY" in line and "HASH" in line for line in lines), navigator.stdout[-3000:]
    assert any("hook2" in line and "nav_web" in line for line in lines), navigator.stdout[-3000:]
    # Read-only, even with the image's compile cache empty (each job's container starts so): verify hashes
    # the policy and changes nothing, not even "would build" on the controller.
    recap = [line for line in lines if re.match(r"^(hook2|localhost)\s+: ok=", line)]
    assert len(recap) == 2 and all(" changed=0 " in line for line in recap), recap

"""Build catalog policies outside Ansible, for the test tiers and benchmarks.

The one build function the policy_build action calls (validation, render,
manifest, the real compile cache). Also the agent's program on a lab host,
where a test or benchmark drives bpfoomctl without Ansible.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import contract
from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_compile
from fleetlab import fleet

sys.path.insert(0, str(Path(__file__).resolve().parent / "callback_plugins"))
from remote_executions import read_counts  # noqa: E402  (the counting callback's own reader)

TESTS = Path(__file__).resolve().parent
# BPFOOM_TEST_CONTROLLER=2.21: the playbooks run on that ansible-core release, on Python 3.13 (labctl controller,
# tests/lab/fleetlab/controller.py); unset, on this process's own (requirements-dev.txt).
CONTROLLER_CORE = os.environ.get("BPFOOM_TEST_CONTROLLER")
AGENT_PACKAGE = TESTS.parent / "plugins" / "module_utils" / "bpfoomctl"
EXAMPLES = yaml.safe_load((TESTS / "policy_examples.yml").read_text())


# The benchmarks' large fleets: 4 groups, 4 distinct policies.
BENCH_GROUPS = {"web": "prefer_avoid", "db": "cgroup_priority", "cache": "select_pid_unit",
                "edge": "prefer_avoid_strict"}


def local_fleet_inventory(hosts: int) -> dict:
    """An inventory of HOSTS local hosts (web1.., db1.., ...), one BENCH_GROUPS policy per group."""
    per_group, odd = divmod(hosts, len(BENCH_GROUPS))
    if odd:
        raise SystemExit(f"{hosts} hosts: give a multiple of {len(BENCH_GROUPS)} (one share per group)")
    return {"all": {"vars": {"ansible_connection": "local"}, "children": {
        group: {"hosts": {f"{group}{i}": None for i in range(1, per_group + 1)},
                "vars": {"bpfoom_policy": EXAMPLES[example]}}
        for group, example in BENCH_GROUPS.items()}}}


def copy_agent_package(host: dict, parent: str) -> None:
    """The agent's package (its modules, no bytecode) as PARENT/bpfoomctl on a lab host."""
    with tempfile.TemporaryDirectory() as scratch:
        package = Path(scratch) / "bpfoomctl"
        package.mkdir()
        for module in AGENT_PACKAGE.glob("*.py"):
            shutil.copy(module, package)
        fleet.run_on(host, f"rm -rf {parent}/bpfoomctl && install -d -m 0755 {parent}")
        fleet.copy_to(host, package, parent)
        fleet.run_on(host, f"chmod -R u=rwX,go=rX {parent}/bpfoomctl")


def install_agent(host: dict) -> None:
    """bpfoomctl on a lab host as the agent module installs it (the package and its command), without the unit."""
    copy_agent_package(host, contract.LIB_DIR)
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as shim:
        shim.write(contract.SHIM_TEXT)
        shim.flush()
        fleet.copy_to(host, Path(shim.name), contract.COMMAND)
    fleet.run_on(host, f"chmod 0755 {contract.COMMAND}")


def build_baseline(ref, work, policies):
    """REF's own catalog builds the policies (git archive REF): {name: (REF's tree, the policy's entry)}."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(TESTS.parent), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import checkout, policytools; "
              "print(json.dumps({name: str(policytools.build_policy(policy, sys.argv[2])) "
              "for name, policy in json.loads(sys.argv[3]).items()}))")
    built = subprocess.run([sys.executable, "-c", script, str(tree / "tests"), str(work / "baseline-objects"),
                            json.dumps(policies)], capture_output=True, text=True, check=True,
                           env={k: v for k, v in os.environ.items() if k != "ANSIBLE_COLLECTIONS_PATH"})
    entries = json.loads(built.stdout)
    return {name: (tree, Path(entry)) for name, entry in entries.items()}


def install_baseline_agent(host, tree, label):
    """REF's agent on the host as /root/LABEL-agent/bpfoomctl, a command as this checkout's: the one-file agent
    of older commits (roles/agent/files/bpfoomctl.py) or the package (plugins/module_utils/bpfoomctl/)."""
    home = f"/root/{label}-agent"
    fleet.run_on(host, f"rm -rf {home} && install -d -m 0755 {home}")
    package = tree / "plugins" / "module_utils" / "bpfoomctl"
    if package.is_dir():
        fleet.copy_to(host, package, home)
    else:
        fleet.copy_to(host, tree / "roles" / "agent" / "files" / "bpfoomctl.py", f"{home}/bpfoomctl.py")
    main = "bpfoomctl.cli" if package.is_dir() else "bpfoomctl"
    run = (f"exec python3 -I -S -c 'import sys; sys.path.insert(0, \"{home}\"); from {main} import main; "
           "sys.exit(main(sys.argv))' \"$@\"")
    fleet.run_on(host, f"printf '%s\\n' '#!/bin/sh' {shlex.quote(run)} > {home}/bpfoomctl && chmod 0755 {home}/bpfoomctl")
    return f"{home}/bpfoomctl"


def upload_policy(host: dict, entry: Path, remote: str) -> None:
    """Copy a built policy (policy.bpf.o, manifest.json) into REMOTE on a lab host, a directory made 0700."""
    fleet.run_on(host, f"install -d -m 0700 {remote}")
    for name in ("policy.bpf.o", "manifest.json"):
        fleet.copy_to(host, entry / name, f"{remote}/{name}")


def build_policy(policy: dict, cache_dir) -> Path:
    """Build a policy value as the policy_build action does; return the cache entry (policy.bpf.o, manifest.json)."""
    built = policy_compile.build_policy(policy, str(cache_dir))
    return Path(cache_dir) / built["key"]


def run_playbook(playbook, inventory, *extra, results_dir, timeout=900, command="ansible-playbook", during=None):
    """Run ansible-playbook; return (process, {task name: {host: result}}) from tests/callback_plugins.

    The results also hold, under "_executions", {host: {"exec": remote module executions, "local": ...}},
    under "_ssh_sessions", {address:port: ssh processes}, and under "_renders" the template renders,
    counted by callback_plugins/remote_executions.py.
    command="ansible" runs an ad-hoc command instead (extra: its arguments).
    during=(text, action): call action(process) once the output has a line containing text (a fault to
    inject into the run, such as a Ctrl-C); the run has its own process group, as a terminal's job.
    """
    results = Path(results_dir) / "results.json"
    executions = Path(results_dir) / "executions.log"
    results.unlink(missing_ok=True)
    executions.unlink(missing_ok=True)
    env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=str(TESTS / "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="results_file,remote_executions,bpfoom.fleet.rollout_report",
               BPFOOM_RESULTS_FILE=str(results),
               BPFOOM_EXEC_LOG=str(executions), ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    argv = [*controller_prefix(), command, "-i", str(inventory), *([str(playbook)] if playbook else []), *extra]
    if during is None:
        process = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    else:
        process = _run_with_fault(argv, env, timeout, *during)
    # What a newer ansible-core deprecates is fixed, not left to warn: no run of the lab tier may warn of one.
    deprecated = [line for line in (process.stdout + process.stderr).splitlines() if "DEPRECATION WARNING" in line]
    assert not deprecated, f"{command} {playbook or ''} on ansible-core {CONTROLLER_CORE or 'of requirements-dev.txt'}:\n" \
        + "\n".join(deprecated[:10])
    report = json.loads(results.read_text()) if results.exists() else {}
    counts = read_counts(str(executions))
    report.update(_executions=counts["executions"], _ssh_sessions=counts["ssh_sessions"], _renders=counts["renders"])
    return process, report


def controller_prefix() -> list:
    """What runs an Ansible command on the controller the tests were asked for (CONTROLLER_CORE)."""
    return [str(TESTS / "lab" / "labctl"), "controller", CONTROLLER_CORE, "--"] if CONTROLLER_CORE else []


def _run_with_fault(argv, env, timeout, text, action):
    with tempfile.TemporaryFile("w+") as stderr, \
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                             start_new_session=True) as running:
        timer = threading.Timer(timeout, os.killpg, (running.pid, signal.SIGKILL))
        timer.start()
        lines, acted = [], False
        try:
            for line in running.stdout:
                lines.append(line)
                if not acted and text in line:
                    acted = True
                    action(running)
            running.wait()
        finally:
            timer.cancel()
        stderr.seek(0)
        return subprocess.CompletedProcess(argv, running.returncode, "".join(lines), stderr.read())

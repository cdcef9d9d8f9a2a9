"""Benchmark: the controller's cost of rollout, verify and rollback at fleet scale, beside `ansible -m ping`.

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/rollout_controller_scale.py [--hosts 200 1000 5000]
        [--mode local|replay] [--forks 10] [--playbooks rollout verify rollback]

An inventory of N hosts that are all this machine (4 groups, 4 distinct policies; this machine's kernel
has no hook, so with bpfoom_unpatched_hosts=skip each host is reported `skipped`), forks 10, and for each
size, side by side in one run: the whole `ansible-playbook bpfoom.fleet.PLAYBOOK` and a whole
`ansible all -m ping` of the same inventory, each a process of its own, printing wall time, the peak RSS
of the largest process (ansible's own, not its workers' forks), the ratio to ping and, between sizes,
the growth of wall time beside the growth of the fleet.

--mode local: every module runs for real on this machine (ansible_connection=local): one real
  bpfoom.fleet.policy (or policy_info) execution per host, as the issue's first measurement.
--mode replay: the controller alone. The connection tests/benchmarks/connection_plugins/replay.py
  answers every module execution at once with the answer this machine gave, recorded once at the start
  (a rollout, a verify and a rollback of 4 hosts through the same connection, which also fill the object
  cache in both modes; each playbook replays its own recording, as the rollout's and the rollback's
  bpfoom.fleet.policy answer differently): no module runs, for ping neither.

CPU seconds (the process and its workers) beside wall time: the controller's work, whatever else loads
the machine.

Targets (issue 25): the rollout at 1,000 hosts at most 1.5x ping, verify at most 1.2x; from 1,000 to
5,000 hosts (and 10,000 in replay mode) wall time growing within 1.1x of the host ratio; peak RSS
below 1 GiB at 10,000.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
from checkout import REPO  # noqa: E402
from policytools import local_fleet_inventory  # noqa: E402

CONNECTIONS = Path(__file__).resolve().parent / "connection_plugins"
# The modules whose answers replay mode gives (the playbooks' and ping's).
RECORDED = [f"ansible_collections.bpfoom.fleet.plugins.modules.{name}" for name in ("policy", "policy_info")] + [
    "ansible.modules.ping"]
PLAYBOOK_VARS = {
    # No host here has the hook: the canary would be skipped, never smoke-tested.
    "rollout": {"bpfoom_unpatched_hosts": "skip", "bpfoom_canary_smoke": False},
    "verify": {"bpfoom_unpatched_hosts": "skip", "bpfoom_verify_fail_on_mismatch": False},
    # No host runs a policy to leave: every host is read and left as it is; the play says so and fails.
    "rollback": {},
}


def write_inventory(work: Path, hosts: int, connection: str) -> Path:
    inventory = local_fleet_inventory(hosts)
    inventory["all"]["vars"].update(ansible_connection=connection, ansible_python_interpreter=sys.executable,
                                    bpfoom_become=False, agent_manage_packages=False,
                                    bpfoom_object_cache=str(work / "objects"))
    path = work / f"hosts-{hosts}.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def measured(argv: list, env: dict) -> tuple:
    """(wall seconds, peak RSS in MB of the largest process, returncode, CPU seconds of the process and its
    workers) of one command. CPU seconds are what the controller spent, whatever else loads the machine."""
    probe = ("import resource, subprocess, sys, time; start = time.monotonic(); "
             "rc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).returncode; "
             "wall = time.monotonic() - start; usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print(wall, usage.ru_maxrss, rc, usage.ru_utime + usage.ru_stime)")
    process = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env,
                             check=False)
    wall, rss_kb, rc, cpu = process.stdout.split()[-4:]
    return float(wall), int(rss_kb) / 1024, int(rc), float(cpu)


def run_env(work: Path, run: str) -> dict:
    """The environment of a run of RUN (a playbook's name, or ping), replaying its own recording."""
    env = dict(os.environ, ANSIBLE_PIPELINING="1", ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CONNECTION_PLUGINS=str(CONNECTIONS), BPFOOM_REPLAY_FILE=str(work / f"recorded-{run}.json"),
               BPFOOM_REPLAY_MODE="replay")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    return env


def playbook_argv(name: str, inventory: Path, forks: int) -> list:
    return ["ansible-playbook", "-i", str(inventory), "-f", str(forks), f"bpfoom.fleet.{name}",
            "-e", json.dumps(PLAYBOOK_VARS[name])]


def record(work: Path, forks: int) -> None:
    """This machine's answers to every module the playbooks run, through the replay connection (record)."""
    inventory = write_inventory(work, 4, "replay")
    outputs = {name: subprocess.run(playbook_argv(name, inventory, forks), capture_output=True, text=True,
                                    env=dict(run_env(work, name), BPFOOM_REPLAY_MODE="record"), check=False).stdout
               for name in ("rollout", "verify", "rollback")}
    subprocess.run(["ansible", "-i", str(inventory), "all", "-m", "ansible.builtin.ping"],
                   env=dict(run_env(work, "ping"), BPFOOM_REPLAY_MODE="record"), capture_output=True, check=True)
    recorded = {}
    for name in ("rollout", "verify", "rollback", "ping"):
        recorded.update(json.loads((work / f"recorded-{name}.json").read_text()))
    missing = sorted(set(RECORDED) - set(recorded))
    if missing:     # replay would run them for real, and the figures would not be the controller's alone
        raise SystemExit(f"nothing recorded for {', '.join(missing)}; the recording runs ended with:\n"
                         + "\n".join(f"--- {name}\n{output[-3000:]}" for name, output in outputs.items()))
    print(f"recorded on this machine: {', '.join(sorted(recorded))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--mode", choices=("local", "replay"), default="local")
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--playbooks", nargs="+", choices=sorted(PLAYBOOK_VARS), default=["rollout", "verify"])
    args = parser.parse_args()
    # The collection this checkout is, as ansible-playbook bpfoom.fleet.NAME finds it.
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / "build" / "collections"))
    with tempfile.TemporaryDirectory(prefix="bpfoom-scale-bench-") as scratch:
        work = Path(scratch)
        connection = "replay" if args.mode == "replay" else "local"
        record(work, args.forks)      # also compiles the policies once: the figures are a warm cache's
        figures = {}
        for hosts in args.hosts:
            inventory = write_inventory(work, hosts, connection)
            ping = measured(["ansible", "-i", str(inventory), "-f", str(args.forks), "all",
                             "-m", "ansible.builtin.ping"], run_env(work, "ping"))
            figures[hosts] = {"ping": ping}
            print(f"{hosts:6} hosts ({args.mode}): ping {ping[0]:7.1f} s, {ping[1]:5.0f} MB, "
                  f"{ping[3]:7.1f} s CPU", flush=True)
            for name in args.playbooks:
                figures[hosts][name] = measured(playbook_argv(name, inventory, args.forks), run_env(work, name))
                wall, rss, rc, cpu = figures[hosts][name]
                print(f"{hosts:6} hosts ({args.mode}): {name:8} {wall:7.1f} s, {rss:5.0f} MB, rc {rc}, "
                      f"ratio to ping {wall / ping[0]:.2f}, {wall / hosts * 1000:.1f} ms per host; "
                      f"{cpu:7.1f} s CPU, {cpu / ping[3]:.2f} of ping's", flush=True)
        sizes = sorted(figures)
        for smaller, larger in zip(sizes, sizes[1:]):
            for name in ("ping", *args.playbooks):
                growth = figures[larger][name][0] / figures[smaller][name][0]
                cpu_growth = figures[larger][name][3] / figures[smaller][name][3]
                print(f"{smaller} -> {larger} hosts (x{larger / smaller:.1f}): {name} wall x{growth:.2f}, "
                      f"{growth / (larger / smaller):.2f} of the host ratio; CPU x{cpu_growth:.2f}, "
                      f"{cpu_growth / (larger / smaller):.2f} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())

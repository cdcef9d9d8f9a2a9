"""Benchmark: what one rollout job costs the controller before it touches a host, by inventory size.

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/awx_job_overhead.py [--hosts 100 1000 10000]

Every node of the AWX workflow, and every slice of a sliced node, is a job that plans the hosts it
sees (bpfoom.fleet.fleet_plan), builds each distinct policy (cached) and picks its stage
(fleet_stage) before any host is contacted. This runs the rollout playbook itself (stage rest, with
every host named as done by earlier stages, so no host is contacted) over inventories of local
hosts in 4 groups with 4 distinct policies, the compile cache warm, and prints the wall time per
size and per host, and its growth against the smallest size. docs/docsite/rst/awx.rst uses the figures to size
slices: a slice of H hosts pays this for H, not for the fleet.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
import checkout  # noqa: E402,F401  # pylint: disable=unused-import
from policytools import local_fleet_inventory, run_playbook  # noqa: E402


def measure(hosts: int, work: Path) -> float:
    inventory = local_fleet_inventory(hosts)
    (work / "hosts.yml").write_text(yaml.safe_dump(inventory))
    # As the workflow's rest node gets them from the canary and wave: here every host, so none is contacted.
    (work / "done.yml").write_text(yaml.safe_dump({
        "bpfoom_stage": "rest", "bpfoom_canary_hosts": [host for group in inventory["all"]["children"].values() for host in group["hosts"]],
        "bpfoom_object_cache": str(work / "objects"), "bpfoom_canary_smoke": False}))
    walls = []
    for _run in (1, 2):                       # the first run fills the compile cache
        start = time.monotonic()
        process, _results = run_playbook("bpfoom.fleet.rollout", work / "hosts.yml", "-e", f"@{work / 'done.yml'}",
                                         results_dir=work, timeout=3600)
        walls.append(time.monotonic() - start)
        if process.returncode != 0:
            print(process.stdout[-3000:], process.stderr[-3000:])
            raise SystemExit(1)
    print(f"{hosts:6} hosts: {walls[1]:6.1f} s with the compile cache warm "
          f"({walls[0]:.1f} s cold), {walls[1] / hosts * 1000:.2f} ms per host", flush=True)
    return walls[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    walls = {}
    for hosts in args.hosts:
        with tempfile.TemporaryDirectory(prefix="bpfoom-awx-bench-") as work:
            walls[hosts] = measure(hosts, Path(work))
    smallest = min(walls)
    for hosts, wall in sorted(walls.items()):
        print(f"{hosts:6} hosts: x{wall / walls[smallest]:.1f} wall for x{hosts / smallest:.0f} hosts")
    return 0


if __name__ == "__main__":
    sys.exit(main())

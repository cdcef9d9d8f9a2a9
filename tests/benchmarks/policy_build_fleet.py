"""Benchmark: building the policies of large inventories (4 groups, 4 distinct policies).

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/policy_build_fleet.py [--hosts 200 1000] [--forks 20]

For each size, runs tests/compile/build_policies.yml (the rollout's own build
tasks) twice against a fresh object cache, with clang behind a wrapper that
counts its runs, and prints per run: compiles, clang starts, template renders
(counted by tests/callback_plugins/remote_executions.py) and wall time; then
the wall time per host across sizes. Targets (issue 9): 4 clang compiles then
0; 4 renders per run, not one per host; wall time growing no faster than the
host count.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
from checkout import REPO  # noqa: E402
from policytools import local_fleet_inventory, run_playbook  # noqa: E402


def measure(hosts: int, forks: int, work: Path) -> list:
    (work / "hosts.yml").write_text(yaml.safe_dump(local_fleet_inventory(hosts)))
    counter = work / "clang-count"
    wrapper = work / "clang"
    wrapper.write_text(f"#!/bin/sh\necho run >> {counter}\nexec clang \"$@\"\n")
    wrapper.chmod(0o755)
    runs = []
    for run in (1, 2):
        start = time.monotonic()
        process, results = run_playbook(REPO / "tests" / "compile" / "build_policies.yml", work / "hosts.yml",
                                        "-f", str(forks), "-e", f"bpfoom_object_cache={work / 'objects'}",
                                        "-e", f"bpfoom_clang={wrapper}", results_dir=work, timeout=3600)
        seconds = time.monotonic() - start
        if process.returncode != 0:
            print(process.stdout[-3000:], process.stderr[-3000:])
            raise SystemExit(1)
        clang_starts = len(counter.read_text().splitlines()) if counter.exists() else 0
        counter.unlink(missing_ok=True)
        compile_log = work / "objects" / "clang-runs.log"
        compiles = len(compile_log.read_text().splitlines()) if compile_log.exists() else 0
        compile_log.unlink(missing_ok=True)
        renders = results["_renders"]
        print(f"{hosts:5} hosts, run {run}: {compiles} compiles, clang started {clang_starts} "
              f"times in all (the rest: version probes), {renders} template renders, wall {seconds:.1f} s")
        runs.append(seconds)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--forks", type=int, default=20)
    args = parser.parse_args()
    walls = {}
    for hosts in args.hosts:
        with tempfile.TemporaryDirectory(prefix="bpfoom-build-bench-") as work:
            walls[hosts] = measure(hosts, args.forks, Path(work))
    smallest = min(walls)
    for hosts, (first, second) in sorted(walls.items()):
        print(f"{hosts:5} hosts: {first / hosts * 1000:.1f} ms per host (first run), {second / hosts * 1000:.1f} ms "
              f"per host (second); growth against {smallest} hosts: x{second / walls[smallest][1]:.2f} wall for "
              f"x{hosts / smallest:.1f} hosts")
    return 0


if __name__ == "__main__":
    sys.exit(main())

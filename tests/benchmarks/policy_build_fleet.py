"""Benchmark: building the policies of a 200-host inventory (4 groups, 4 distinct policies).

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/policy_build_fleet.py [--hosts 200] [--forks 20]

Runs tests/compile/build_policies.yml twice against a fresh object cache, with
clang behind a wrapper that counts its runs, and prints the clang runs and the
wall time of each run. Target (issue 3): 4 clang runs, then 0.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = yaml.safe_load((REPO / "tests" / "policy_examples.yml").read_text())
GROUPS = {"web": "prefer_avoid", "db": "cgroup_priority", "cache": "select_pid_unit", "edge": "prefer_avoid_strict"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--forks", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bpfoom-build-bench-") as work:
        work = Path(work)
        per_group = args.hosts // len(GROUPS)
        inventory = {"all": {"vars": {"ansible_connection": "local"}, "children": {
            group: {"hosts": {f"{group}{i}": None for i in range(1, per_group + 1)},
                    "vars": {"bpfoom_policy": EXAMPLES[example]}}
            for group, example in GROUPS.items()}}}
        (work / "hosts.yml").write_text(yaml.safe_dump(inventory))
        counter = work / "clang-count"
        wrapper = work / "clang"
        wrapper.write_text(f"#!/bin/sh\necho run >> {counter}\nexec clang \"$@\"\n")
        wrapper.chmod(0o755)
        collections = REPO / "build" / "collections"
        link = collections / "ansible_collections" / "bpfoom" / "fleet"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(REPO, target_is_directory=True)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections))
        for run in (1, 2):
            start = time.monotonic()
            result = subprocess.run(
                ["ansible-playbook", "-i", str(work / "hosts.yml"), str(REPO / "tests/compile/build_policies.yml"),
                 "-f", str(args.forks), "-e", f"bpfoom_object_cache={work / 'objects'}", "-e", f"bpfoom_clang={wrapper}"],
                capture_output=True, text=True, env=env, check=False)
            seconds = time.monotonic() - start
            if result.returncode != 0:
                print(result.stdout[-3000:], result.stderr[-3000:])
                return 1
            runs = len(counter.read_text().splitlines()) if counter.exists() else 0
            counter.unlink(missing_ok=True)
            compile_log = work / "objects" / "clang-runs.log"
            compiles = len(compile_log.read_text().splitlines()) if compile_log.exists() else 0
            compile_log.unlink(missing_ok=True)
            print(f"run {run}: {per_group * len(GROUPS)} hosts, {len(GROUPS)} groups, forks {args.forks}: "
                  f"{compiles} compiles, clang started {runs} times in all (the rest: version probes), "
                  f"wall {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

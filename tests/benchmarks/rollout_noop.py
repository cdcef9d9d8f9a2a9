"""Benchmark: a second rollout with nothing to change, on the demo fleet (make demo first).

    PATH=<venv>/bin:$PATH ANSIBLE_COLLECTIONS_PATH=build/collections python3 tests/benchmarks/rollout_noop.py

Runs bpfoom.fleet.rollout against build/demo/inventory (the hosts make demo left
up), once to be sure the fleet is converged and once more, and prints for the
second run: the whole run's wall time, and per host its changed count and the
wall time of its part of the batched play (first task start to last task end,
from tests/callback_plugins/results_file.py).
"""

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests" / "lab"), str(REPO / "tests"),
                str(REPO / "build" / "collections")]      # build/collections: the link make demo made

from policytools import run_playbook  # noqa: E402


def main() -> int:
    inventory = REPO / "build" / "demo" / "inventory"
    if not inventory.is_dir():
        print(f"{inventory} is missing: run make demo first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bpfoom-rollout-bench-") as work:
        for run in ("converge", "measured"):
            start = time.monotonic()
            process, results = run_playbook("bpfoom.fleet.rollout", inventory, results_dir=work, timeout=1800)
            wall = time.monotonic() - start
            if process.returncode != 0:
                print(process.stdout[-3000:], file=sys.stderr)
                return 1
        changed = {line.split()[0]: int(line.split(" changed=")[1].split()[0])
                   for line in process.stdout.splitlines() if " changed=" in line and " : ok=" in line}
        print(f"second rollout (nothing to change): {wall:.1f} s wall for {len(changed)} hosts")
        for host, (first, last) in sorted(results["_host_spans"]["Roll the policies out in batches"].items()):
            print(f"  {host:8} changed={changed.get(host)}  {last - first:5.1f} s in its batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())

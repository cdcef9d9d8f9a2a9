"""Benchmark: seconds from qemu start to SSH for one lab host, over N boots.

    python3 tests/benchmarks/boot_to_ssh.py [--runs 5] [--kernel patched|unpatched]

Boots a one-host fleet in a scratch lab directory N times (fresh overlay each
time) and prints every figure and the median. Target (issue 2): at most 30 s
per host under TCG.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

from fleetlab import fleet  # noqa: E402  (needs the path above)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernel", default="patched")
    parser.add_argument("--memory", type=int, default=768)
    args = parser.parse_args()
    figures = []
    with tempfile.TemporaryDirectory(prefix="bpfoom-bench-") as lab_dir:
        os.environ["BPFOOM_LAB_DIR"] = lab_dir
        suffix = "" if args.kernel == "patched" else ":unpatched"
        for run in range(1, args.runs + 1):
            try:
                hosts = fleet.up([f"bench=1{suffix}"], memory_mib=args.memory)["hosts"]
                figures.append(hosts["bench1"]["boot_to_ssh_s"])
                print(f"boot {run}: {figures[-1]:.1f} s to SSH")
            finally:
                fleet.down()
    print(f"boot to SSH ({args.kernel} kernel, 1 vCPU, {args.memory} MiB, TCG): "
          f"median {statistics.median(figures):.1f} s over {len(figures)} boots "
          f"(min {min(figures):.1f}, max {max(figures):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

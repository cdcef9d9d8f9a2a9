"""Benchmark: the agent's `bpfoomctl apply` against bcc, whole process against whole process.

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/apply_vs_bcc.py [--runs 10] [--baseline REF]

Boots one patched lab host from the `bcc` image variant (python3-bpfcc only
there; the lab kernel has IKHEADERS), 2 vCPUs, installs bpfoomctl, uploads a
catalog policy (tests/policy_examples.yml: prefer_avoid), and runs
tests/kernel/guest/bench_runner.py on the host. Prints median wall time and
peak RSS of each, and the ratios. Targets (issue 4): apply at most 150 ms and
30 MiB under TCG; at least 20 times faster and 5 times leaner than bcc.
With --baseline REF, REF's own agent (git archive REF) applies the same
policy as REF's catalog builds it, alternating run by run with this
checkout's: apply's wall time and peak RSS before and after a change of the agent.
"""

import argparse
import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
import checkout  # noqa: E402,F401  # pylint: disable=unused-import

from fleetlab import fleet  # noqa: E402
from policytools import (  # noqa: E402
    EXAMPLES, build_baseline, build_policy, install_agent, install_baseline_agent, upload_policy)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", metavar="REF", help="also time REF's agent applying REF's build of the policy")
    args = parser.parse_args()
    with fleet.bench_host("bench=1:patched:bcc", memory_mib=1536, cpus=2) as (host, work):
        install_agent(host)
        upload_policy(host, build_policy(EXAMPLES["prefer_avoid"], work / "objects"), "/root/policy")
        fleet.copy_to(host, TESTS / "kernel" / "guest" / "bench_runner.py", "/root/bench_runner.py")
        agents = ["now=bpfoomctl:/root/policy"]
        if args.baseline:
            (tree, entry), = build_baseline(args.baseline, work, {"prefer_avoid": EXAMPLES["prefer_avoid"]}).values()
            upload_policy(host, entry, "/root/baseline-policy")
            agents.append(f"{args.baseline}={install_baseline_agent(host, tree, 'baseline')}:/root/baseline-policy")
        for agent in agents:                                   # first runs write the bytecode caches
            fleet.run_on(host, f"{agent.split('=')[1].split(':')[0]} status > /dev/null")
        result = fleet.run_on(host, f"python3 /root/bench_runner.py {args.runs} {' '.join(agents)}", timeout=1800)
    figures = json.loads(result.stdout)
    bcc, real = figures["bcc_counter"], figures["bcc_real_evaluator"]
    for label, apply in figures["apply"].items():
        print(f"bpfoomctl apply by {label} (load, attach, pin, verify, 2 programs), {apply['runs']} runs: "
              f"median {apply['median_wall_s'] * 1000:.0f} ms wall, {apply['median_maxrss_mib']:.1f} MiB peak RSS "
              f"(runs: {apply['walls_s']})")
    apply = figures["apply"]["now"]
    if args.baseline:
        before = figures["apply"][args.baseline]
        print(f"now against {args.baseline}: wall {apply['median_wall_s'] / before['median_wall_s']:.2f}x, "
              f"peak RSS {apply['median_maxrss_mib'] / before['median_maxrss_mib']:.2f}x")
    if bcc["ok"]:
        print(f"bcc compile + load of a counter-only KMOD_RET evaluator, {bcc['runs']} runs: "
              f"median {bcc['median_wall_s']:.2f} s wall, {bcc['median_maxrss_mib']:.1f} MiB peak RSS")
        print(f"ratio: apply is {bcc['median_wall_s'] / apply['median_wall_s']:.1f}x faster and "
              f"{bcc['median_maxrss_mib'] / apply['median_maxrss_mib']:.1f}x leaner than bcc")
    else:
        print(f"bcc could not load the counter-only evaluator: {bcc['error'][-400:]}")
    print(f"bcc building the real evaluator (reads task->comm via <linux/sched.h>): "
          f"{'built' if real['ok'] else 'FAILED'} after {real['wall_s']:.1f} s"
          + ("" if real["ok"] else f": {real['error_tail'][-300:]!r}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

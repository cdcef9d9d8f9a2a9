"""Benchmark: how often the smoke test sees a second OOM, with the trigger at nice 19 and at nice 0.

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/smoke_second_oom.py [--runs 40]

Boots one patched lab host (1 vCPU, as the lab's hosts), applies the demo's
web policy (tests/lab/demo/group_vars/web.yml: it prefers report-*), and runs
its smoke scenario (web-server 64 MiB, report-gen 16, trigger 40 under
128 MiB) --runs times with the trigger at nice 19 (what
plugins/module_utils/oom_smoke.py does) and --runs times at nice 0. Prints,
for each, how many runs killed a second process (oom_smoke.SECOND_OOM_RACE)
and how many first kills were not report-gen (the policy's choice).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
import checkout  # noqa: E402,F401  # pylint: disable=unused-import

from fleetlab import fleet  # noqa: E402
from policytools import build_policy, install_agent, upload_policy  # noqa: E402

ROOT = TESTS.parent
WEB_POLICY = yaml.safe_load((TESTS / "lab" / "demo" / "group_vars" / "web.yml").read_text())["bpfoom_policy"]

# On the host: the scenario RUNS times per trigger priority, counted. Arguments: RUNS SMOKE_JSON.
GUEST_LOOP = """
import json, sys
sys.path.insert(0, "/root")
import oom_smoke
runs, smoke = int(sys.argv[1]), json.loads(sys.argv[2])
processes = [(p["name"], p["mib"], p.get("cgroup")) for p in smoke["processes"]]
figures = {}
for nice in (19, 0):
    outcomes = [oom_smoke.run(processes, smoke["limit_mib"], 60, trigger_nice=nice) for _run in range(runs)]
    figures[nice] = {"second_kill": sum(len(o["killed"]) > 1 for o in outcomes),
                     "wrong_first_victim": sum(o["victim"] != smoke["expect_victim"] for o in outcomes),
                     "policy_names": sorted({name for o in outcomes for name in o["policy_names"]})}
print(json.dumps(figures))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    policy = {key: value for key, value in WEB_POLICY.items() if key != "smoke"}
    with fleet.bench_host("bench=1:patched") as (host, work):
        install_agent(host)
        upload_policy(host, build_policy(policy, work / "objects"), "/root/policy")
        fleet.copy_to(host, ROOT / "plugins" / "module_utils" / "oom_smoke.py", "/root/oom_smoke.py")
        guest_loop = work / "second_oom.py"
        guest_loop.write_text(GUEST_LOOP)
        fleet.copy_to(host, guest_loop, "/root/second_oom.py")
        fleet.run_on(host, "bpfoomctl apply /root/policy > /dev/null")
        smoke = shlex.quote(json.dumps(WEB_POLICY["smoke"]))
        result = fleet.run_on(host, f"python3 /root/second_oom.py {args.runs} {smoke}", timeout=60 * args.runs)
    expected = WEB_POLICY["smoke"]["expect_victim"]
    for nice, counts in json.loads(result.stdout).items():
        print(f"trigger at nice {nice:>2}: {counts['second_kill']} of {args.runs} smoke tests killed a second "
              f"process; {counts['wrong_first_victim']} first kills were not {expected} "
              f"(reports named {', '.join(counts['policy_names'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

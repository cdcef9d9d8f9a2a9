"""Benchmark: remote executions and wall time of the rollout, on the demo fleet (make demo first).

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/rollout_noop.py [--repeat 3]

On build/demo/inventory (web1 canary with the hook, db1 with the hook, web2
without), with the remote executions of every host counted by
tests/callback_plugins/remote_executions.py, it prints:
  1. a first install: db1 with no agent, no policy, no bpffs mount
     (bpfoom_hosts=db1, so db1 is that run's canary and its smoke test runs);
  2. a changed policy: the whole fleet, web's policy renamed;
  3. nothing to change: the whole fleet again (the demo's own policies
     restored first), per host its count and the wall time of its part;
  4. one host, whole process, nothing to change: `ansible-playbook
     bpfoom.fleet.rollout -e bpfoom_hosts=db1 -e bpfoom_canary_smoke=false`
     beside `ansible db1 -m ping`, alternated --repeat times in this run; the
     medians and their ratio.
Targets (issue 9): 1 execution per host with nothing to change (2 on the
canary: its smoke test), at most 2 for a changed policy, at most 3 for a first
install (the third only on a host without libbpf: the package, then the same
call again); one host at most 1.2x an ansible ping (issue 25; 2x in issue 9).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
from checkout import REPO  # noqa: E402

from fleetlab import fleet  # noqa: E402
from policytools import run_playbook  # noqa: E402

DEMO_VARS = REPO / "tests" / "lab" / "demo" / "group_vars"


def rollout(inventory, work, **extra_vars):
    start = time.monotonic()
    process, results = run_playbook("bpfoom.fleet.rollout", inventory, "-e", json.dumps(extra_vars),
                                    results_dir=work, timeout=1800)
    wall = time.monotonic() - start
    if process.returncode != 0:
        print(process.stdout[-3000:], file=sys.stderr)
        raise SystemExit(f"the rollout failed ({extra_vars})")
    return wall, results, process


def per_host(results, process):
    changed = {line.split()[0]: int(line.split(" changed=")[1].split()[0])
               for line in process.stdout.splitlines() if " changed=" in line and " : ok=" in line}
    spans = results["_host_spans"].get("Roll the policies out in batches", {})
    return {host: {"executions": results["_executions"].get(host, {}).get("exec", 0), "changed": changed.get(host),
                   "seconds": (spans[host][1] - spans[host][0]) if host in spans else None}
            for host in sorted(changed)}


def show(title, wall, rows):
    print(f"{title}: {wall:.1f} s wall")
    for host, row in rows.items():
        seconds = f"{row['seconds']:5.1f} s in its batch" if row["seconds"] is not None else ""
        print(f"  {host:6} remote executions={row['executions']}  changed={row['changed']}  {seconds}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    inventory = REPO / "build" / "demo" / "inventory"
    if not inventory.is_dir():
        print(f"{inventory} is missing: run make demo first", file=sys.stderr)
        return 1
    web = yaml.safe_load((DEMO_VARS / "web.yml").read_text())["bpfoom_policy"]
    with tempfile.TemporaryDirectory(prefix="bpfoom-rollout-bench-") as work:
        rollout(inventory, work)                                  # converged, whatever the fleet held

        db1 = fleet.get_host("db1")
        fleet.run_on(db1, "bpfoomctl detach >/dev/null; systemctl disable --now bpfoom.service; "
                          "rm -rf /usr/local/lib/bpfoom /usr/local/sbin/bpfoomctl /etc/systemd/system/bpfoom.service "
                          "/var/lib/bpfoom; systemctl daemon-reload; umount /sys/fs/bpf")
        wall, results, process = rollout(inventory, work, bpfoom_hosts="db1")
        show("1. first install of db1 (agent, unit, bpffs, policy; db1 is this run's canary)", wall,
             per_host(results, process))

        renamed = dict(web, name="web_renamed")
        wall, results, process = rollout(inventory, work, bpfoom_group_policies={"web": renamed})
        show("2. changed policy (web renamed), whole fleet", wall, per_host(results, process))

        rollout(inventory, work)                                  # the demo's policies again
        wall, results, process = rollout(inventory, work)
        show("3. nothing to change, whole fleet (before issue 9: 98 s, 13 executions per host)", wall,
             per_host(results, process))

        playbook_times, ping_times = [], []
        for _round in range(args.repeat):
            start = time.monotonic()
            process, results = run_playbook("bpfoom.fleet.rollout", inventory, "-e", "bpfoom_hosts=db1",
                                            "-e", "bpfoom_canary_smoke=false", results_dir=work)
            playbook_times.append(time.monotonic() - start)
            assert process.returncode == 0 and results["_executions"]["db1"]["exec"] == 1, process.stdout[-2000:]
            start = time.monotonic()
            process, _results = run_playbook(None, inventory, "db1", "-m", "ansible.builtin.ping",
                                             results_dir=work, command="ansible")
            ping_times.append(time.monotonic() - start)
            assert process.returncode == 0, process.stdout
        rollout_median, ping_median = statistics.median(playbook_times), statistics.median(ping_times)
        print(f"4. one host (db1), nothing to change, whole process, {args.repeat} rounds alternated: "
              f"rollout {rollout_median:.2f} s, ansible -m ping {ping_median:.2f} s (medians): "
              f"ratio {rollout_median / ping_median:.2f} (target at most 1.2)")
        print(f"   rollout runs: {', '.join(f'{t:.2f}' for t in playbook_times)}; "
              f"ping runs: {', '.join(f'{t:.2f}' for t in ping_times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

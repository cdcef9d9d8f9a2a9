"""`make demo`: boot (or reuse) three lab hosts in two groups, roll each group's policy out, print one table.

Groups: web (web1 with the hook, web2 without) and db (db1 with the hook); their
policies are in group_vars/ beside this file. The rollout is the collection's
own playbook (bpfoom.fleet.rollout: canary web1 with its smoke test, then the
rest; web2 is skipped and reported), then bpfoom.fleet.verify with every
policy's smoke test. The hosts stay up afterwards.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "build" / "collections"))   # make collection-link

from ansible_collections.bpfoom.fleet.plugins.filter.aligned_table import aligned_table  # noqa: E402
from fleetlab import common, fleet  # noqa: E402

DEMO = Path(__file__).resolve().parent
FLEET = ["web=1", "db=1", "web=1:unpatched"]
HOSTS = {"web1", "db1", "web2"}


def boot_or_reuse():
    hosts = fleet.status()
    if {host["name"] for host in hosts} == HOSTS and all(host["running"] for host in hosts) \
            and all(fleet.ssh_ready(host) for host in hosts):
        common.say(f"reusing the demo fleet in {common.lab_dir()}")
        return
    if hosts:
        common.say("the lab holds another or a broken fleet: stopping it first")
        fleet.down()
    fleet.up(FLEET, memory_mib=768)


def playbook(name, inventory_dir, *extra):
    common.say(f"ansible-playbook bpfoom.fleet.{name}")
    env = dict(os.environ, ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CALLBACKS_ENABLED="bpfoom.fleet.rollout_report")
    subprocess.run(["ansible-playbook", "-i", str(inventory_dir), f"bpfoom.fleet.{name}", *extra],
                   env=env, check=True)


def table(rows):
    header = ("HOST", "GROUP", "KERNEL HOOK", "POLICY", "ATTACHED", "SMOKE VICTIM", "EXPECTED")
    return "\n".join(aligned_table([(
        row["host"], row["group"], "yes" if row["hook"] else "no", row["policy_name"],
        "yes" if row["attached"] else "no", row["smoke_victim"],
        row["smoke_expected"] if row["hook"] else None) for row in rows], header))


def main():
    start = time.monotonic()
    work = common.REPO_ROOT / "build" / "demo"
    boot_or_reuse()
    inventory_dir = fleet.inventory_directory(work / "inventory", DEMO / "group_vars")
    report = work / "report.json"
    playbook("rollout", inventory_dir)
    playbook("verify", inventory_dir, "-e", "bpfoom_verify_smoke=true", "-e", f"bpfoom_report_file={report}")
    rows = sorted(json.loads(report.read_text()), key=lambda row: row["host"])
    lab = common.lab_dir()
    print(f"\n{table(rows)}\n")
    print(f"demo done in {common.elapsed(start)}; the hosts stay up:")
    print(f"  tests/lab/labctl ssh web1                     # a shell on a host (lab: {lab})")
    print(f"  ansible -i {inventory_dir} all -m bpfoom.fleet.policy_info")
    print(f"  ansible-playbook -i {inventory_dir} bpfoom.fleet.verify")
    print("  make demo-stop                                # stop the hosts, remove their overlays")
    return 0


if __name__ == "__main__":
    sys.exit(main())

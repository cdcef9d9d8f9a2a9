"""Provoke one memcg OOM on a lab host and report what the kernel did, as JSON.

  oom_scenario.py [--before-trigger CMD] MEMHOG LIMIT_MIB TIMEOUT_S NAME=MIB[@CGROUP] ...

The scenario of the policy_smoke module (plugins/module_utils/oom_smoke.py,
copied beside this file), with the C memhog so that sizes are exact: one hog
per NAME=MIB, in order, the last one pushing the cgroup over LIMIT_MIB.
NAME=MIB@CGROUP runs that hog in a child cgroup named CGROUP (a unit-like
name such as batch.slice). Each hog's PID is in /run/NAME.pid while it runs.
--before-trigger CMD runs once every hog but the last holds its memory (to
apply a policy that needs those PIDs).
"""

import json
import subprocess
import sys

import oom_smoke


def parse_hog(spec):
    name, rest = spec.split("=", 1)
    mib, _sep, child = rest.partition("@")
    return name, int(mib), child or None


def main(argv):
    before_trigger = None
    if len(argv) > 2 and argv[1] == "--before-trigger":
        command, argv = argv[2], [argv[0]] + argv[3:]

        def before_trigger(_pids):
            subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    memhog = argv[1]
    outcome = oom_smoke.run([parse_hog(spec) for spec in argv[4:]], int(argv[2]), float(argv[3]),
                            hog_command=lambda name, mib: [memhog, name, str(mib)],
                            before_trigger=before_trigger, pid_dir="/run")
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

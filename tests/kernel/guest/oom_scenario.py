"""Provoke one memcg OOM on a lab host and report what the kernel did, as JSON.

  oom_scenario.py [--before-trigger CMD] MEMHOG LIMIT_MIB TIMEOUT_S NAME=MIB[@CGROUP] ...

Clears the kernel log first (lab hosts only). In a fresh cgroup v2 child with memory.max=LIMIT_MIB (and no swap), starts one
memhog per NAME=MIB, in order, each waiting for the previous to hold its
memory; the last one pushes the cgroup over its limit. Then waits until a hog
is killed and the rest is settled, or TIMEOUT_S passes (an ABORT or
kill-nothing policy leaves the last charge retrying). Every hog is killed and
the cgroup removed on every path; processes outside the cgroup are never touched.

NAME=MIB@CGROUP runs that hog in a child cgroup named CGROUP (a unit-like
name such as batch.slice) of the scenario's cgroup. Each hog's PID is written
to /run/NAME.pid. --before-trigger CMD runs once every hog but the last holds
its memory (to apply a policy that needs those PIDs).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

CGROUP_ROOT = "/sys/fs/cgroup"


def kernel_log():
    return subprocess.run(["dmesg", "--notime"], capture_output=True, text=True, check=False).stdout.splitlines()


def write(path, value):
    with open(path, "w") as handle:
        handle.write(value)


def run(memhog, limit_mib, timeout, hogs, before_trigger=None):
    cgroup = os.path.join(CGROUP_ROOT, f"bpfoom-scenario-{os.getpid()}")
    write(os.path.join(CGROUP_ROOT, "cgroup.subtree_control"), "+memory")
    os.mkdir(cgroup)
    # A clean kernel log: a report flood of an earlier scenario can outgrow the
    # ring buffer, and this scenario's lines must be told apart from it.
    subprocess.run(["dmesg", "--clear"], check=True)
    processes = {}
    try:
        write(os.path.join(cgroup, "memory.max"), f"{limit_mib}M")
        if os.path.exists(os.path.join(cgroup, "memory.swap.max")):
            write(os.path.join(cgroup, "memory.swap.max"), "0")
        for name, mib, child in hogs:
            home = os.path.join(cgroup, child) if child else cgroup
            os.makedirs(home, exist_ok=True)
            procs_file = os.path.join(home, "cgroup.procs")
            if name == hogs[-1][0] and before_trigger:
                subprocess.run(before_trigger, shell=True, check=True, stdout=subprocess.DEVNULL)
            processes[name] = subprocess.Popen(
                [memhog, name, str(mib)], stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda procs=procs_file: write(procs, str(os.getpid())))
            write(f"/run/{name}.pid", str(processes[name].pid))
            if name != hogs[-1][0]:
                if processes[name].stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{name} did not get its {mib} MiB under the limit")
        deadline = time.monotonic() + timeout
        timed_out = True
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes.values()):
                time.sleep(1)       # let the victim's exit and the report settle
                timed_out = False
                break
            time.sleep(0.2)
        killed = sorted(name for name, p in processes.items() if p.poll() == -signal.SIGKILL)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        for name, _mib, _child in hogs:
            if os.path.exists(f"/run/{name}.pid"):
                os.unlink(f"/run/{name}.pid")
        for _attempt in range(100):
            try:
                for child in {child for _name, _mib, child in hogs if child}:
                    if os.path.isdir(os.path.join(cgroup, child)):
                        os.rmdir(os.path.join(cgroup, child))
                os.rmdir(cgroup)
                break
            except OSError:
                time.sleep(0.1)
    log = kernel_log()
    reports = [line for line in log if "invoked oom-killer" in line]
    names = [m.group(1) for line in reports for m in [re.search(r"policy_name=(\S*),", line)] if m]
    return {
        "killed": killed,
        "timed_out": timed_out,
        "reports": reports,
        "policy_names": names,
        "no_victim": any("no killable processes" in line for line in log),
        "kill_lines": [line for line in log if "Killed process" in line],
    }


def parse_hog(spec):
    name, rest = spec.split("=", 1)
    mib, _sep, child = rest.partition("@")
    return name, int(mib), child or None


def main(argv):
    before_trigger = None
    if len(argv) > 2 and argv[1] == "--before-trigger":
        before_trigger, argv = argv[2], [argv[0]] + argv[3:]
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    hogs = [parse_hog(spec) for spec in argv[4:]]
    print(json.dumps(run(argv[1], int(argv[2]), float(argv[3]), hogs, before_trigger)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Provoke one memcg OOM on a lab host and report what the kernel did, as JSON.

  oom_scenario.py MEMHOG LIMIT_MIB TIMEOUT_S NAME=MIB [NAME=MIB ...]

Clears the kernel log first (lab hosts only). In a fresh cgroup v2 child with memory.max=LIMIT_MIB (and no swap), starts one
memhog per NAME=MIB, in order, each waiting for the previous to hold its
memory; the last one pushes the cgroup over its limit. Then waits until a hog
is killed and the rest is settled, or TIMEOUT_S passes (an ABORT or
kill-nothing policy leaves the last charge retrying). Every hog is killed and
the cgroup removed on every path; processes outside the cgroup are never touched.
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


def run(memhog, limit_mib, timeout, hogs):
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
        procs_file = os.path.join(cgroup, "cgroup.procs")
        for name, mib in hogs:
            processes[name] = subprocess.Popen(
                [memhog, name, str(mib)], stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda: write(procs_file, str(os.getpid())))
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
        for _attempt in range(100):
            try:
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


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    hogs = [(spec.split("=")[0], int(spec.split("=")[1])) for spec in argv[4:]]
    print(json.dumps(run(argv[1], int(argv[2]), float(argv[3]), hogs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

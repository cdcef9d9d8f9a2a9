"""Benchmark: explain's wall time beside status's, and the BPF run time a policy adds to a memcg OOM, enforced and
in shadow mode, with 1,000 extra tasks; optionally beside the same policies as an earlier commit builds them.

    PATH=<venv>/bin:$PATH python3 tests/benchmarks/explain_and_oom_cost.py [--tasks 1000] [--runs 5] [--baseline REF]
        [--ooms N]

Boots one patched lab host (1 vCPU, as the lab's hosts). Two policies:
prefer_b (prefer_avoid, prefers the comm hog_b: no cgroup walk) and
keep_ssh (also avoids sshd.service and uid 65534: a walk up every candidate's
cgroups, with the owner checks that decide who may be protected). Then, side by
side in one run:
- each policy applied by its own agent (this checkout's, and --baseline's),
  then `bpfoomctl status`, `bpfoomctl explain` (the running policy, as verify
  asks) and `bpfoomctl explain DIR` (a preview of the same policy), --runs
  times each, alternating, with --tasks extra sleeping processes on the host
  (wall time, median);
- --runs memcg OOMs per policy, enforced and in shadow mode, alternating, each
  with the --tasks processes inside the OOM's cgroup (so every OOM scores them
  all): the kernel's own BPF statistics (kernel.bpf_stats_enabled, run_time_ns
  of the mode's programs) before and after each OOM give the time the policy's
  programs ran during it. With --baseline REF, the same policies built and
  applied by REF's own catalog and agent (git archive REF) run in turn with
  this checkout's, alternating OOM by OOM.
- Each scenario's first victim is the first hog a blocking waitpid() reaps
  killed by SIGKILL (the order they died in), beside the OOM kills of the
  cgroup's memory.events: not the kernel log, which 1,000 tasks overflow
  between two reads.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
# Importing checkout sets up this checkout as the collection, and the test helpers importable.
import checkout  # noqa: E402,F401  # pylint: disable=unused-import

from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import contract  # noqa: E402
from fleetlab import fleet  # noqa: E402
from policytools import build_baseline, build_policy, install_agent, install_baseline_agent, upload_policy  # noqa: E402

PREFER_B = {"name": "prefer_b", "template": "prefer_avoid", "params": {"prefer": {"comm": ["hog_b"]}}}
KEEP_SSH = {"name": "keep_ssh", "template": "prefer_avoid",
            "params": {"prefer": {"comm": ["hog_b"]}, "avoid": {"cgroup": ["sshd.service"], "uid": [65534]}}}
POLICIES = {"prefer_b": PREFER_B, "keep_ssh": KEEP_SSH}

# On the host. Arguments: TASKS RUNS OOMS VARIANT... (VARIANT: LABEL=AGENT:POLICY_DIR). Prints the figures as JSON.
GUEST = r"""
import json, os, re, signal, subprocess, sys, time
tasks, runs, ooms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
CG = "/sys/fs/cgroup/bench"

def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)

def sleepers(count, cgroup=None):
    # count processes that only wait, forked from one parent (placed in cgroup first).
    parent = os.fork()
    if parent == 0:
        if cgroup:
            write(cgroup + "/cgroup.procs", str(os.getpid()))
        for _ in range(count):
            if os.fork() == 0:
                signal.pause()
                os._exit(0)
        signal.pause()
        os._exit(0)
    return parent

def stop(parent, cgroup=None):
    if cgroup:
        write(cgroup + "/cgroup.kill", "1")
    else:
        subprocess.run(["pkill", "-KILL", "-P", str(parent)])
        os.kill(parent, signal.SIGKILL)
    os.waitpid(parent, 0)


def timed(command):
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started

def bpf_run_ns(names):
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
    chosen = [p for p in progs if p.get("name") in names]
    return sum(p.get("run_time_ns", 0) for p in chosen), sum(p.get("run_cnt", 0) for p in chosen)

ENFORCE = {"bpfoom_evaluate_task", "bpfoom_set_policy_name"}
SHADOW = {"bpfoom_shadow_oom_start", "bpfoom_shadow_candidate", "bpfoom_shadow_kill", "bpfoom_shadow_oom_end"}

def memcg_oom(mode):
    # One memcg OOM with `tasks` sleepers in the cgroup: the policy's BPF time during it, and the victim.
    os.makedirs(CG, exist_ok=True)
    parent = sleepers(tasks, CG)
    while len(open(CG + "/cgroup.procs").read().split()) < tasks + 1:
        time.sleep(0.1)
    base = int(open(CG + "/memory.current").read())
    write(CG + "/memory.max", str(base + 96 * 2**20))
    hogs = []
    def hog(name, mib):
        proc = subprocess.Popen(["/root/memhog", name, str(mib)], stdout=subprocess.PIPE,
                                preexec_fn=lambda: write(CG + "/cgroup.procs", str(os.getpid())))
        proc.stdout.readline()          # memhog says when it holds its memory
        hogs.append(proc)
        return proc
    hog("hog_a", 60)
    hog("hog_b", 10)
    names = ENFORCE if mode == "enforce" else SHADOW
    ns0, cnt0 = bpf_run_ns(names)
    hogs.append(subprocess.Popen(["/root/memhog", "hog_c", "28"], stdout=subprocess.DEVNULL,    # the trigger
                                 preexec_fn=lambda: write(CG + "/cgroup.procs", str(os.getpid()))))
    # The victims in the order they died: a blocking wait returns as each hog dies (it cannot wrap, as the
    # kernel's log does with 1,000 tasks between two reads). Until the trigger ends or 60 s pass.
    by_pid, order = {h.pid: (h, name) for h, name in zip(hogs, ["hog_a", "hog_b", "hog_c"])}, []
    def timeout(*_):
        raise TimeoutError
    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    while len(order) < len(hogs):
        try:
            pid, status = os.waitpid(-1, 0)
        except TimeoutError:
            break
        if pid in by_pid:
            proc, name = by_pid[pid]
            proc.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            order.append(name + ("" if proc.returncode == -9 else "(exited)"))
            if name == "hog_c" or proc.returncode == -9 and len(order) == 1:
                signal.alarm(2)         # the trigger is gone, or the first victim: what else dies, within 2 s
    signal.alarm(0)
    victims = [name for name in order if not name.endswith("(exited)")]
    time.sleep(0.5)
    ns1, cnt1 = bpf_run_ns(names)
    events = dict(line.split() for line in open(CG + "/memory.events"))
    ooms, invocations = int(events["oom_kill"]), int(events["oom"])
    write(CG + "/cgroup.kill", "1")
    for proc in hogs:
        if proc.returncode is None:
            proc.wait()
    os.waitpid(parent, 0)
    while open(CG + "/cgroup.procs").read().strip():
        time.sleep(0.05)
    os.rmdir(CG)
    return {"ns": (ns1 - ns0) / max(ooms, 1), "runs": (cnt1 - cnt0) / max(ooms, 1), "ooms": ooms,
            "victim": victims[0] if victims else None, "killed": victims,
            "invocations": invocations}

write("/proc/sys/kernel/bpf_stats_enabled", "1")
variants = [arg.split("=", 1) for arg in sys.argv[4:]]
figures = {"status_s": {}, "explain_s": {}, "preview_s": {}, "ooms": {}}
parent = sleepers(tasks)
time.sleep(2)
for _ in range(runs):
    for label, spec in variants:        # each variant's policy applied by its own agent, then read and explained
        agent, policy = spec.split(":")
        subprocess.run([agent, "apply", policy], check=True, stdout=subprocess.DEVNULL)
        figures["status_s"].setdefault(label, []).append(timed([agent, "status"]))
        figures["explain_s"].setdefault(label, []).append(timed([agent, "explain"]))
        figures["preview_s"].setdefault(label, []).append(timed([agent, "explain", policy]))
stop(parent)
for _ in range(ooms):
    for label, spec in variants:
        agent, policy = spec.split(":")
        for mode in ("enforce", "shadow"):
            subprocess.run([agent, "detach"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([agent, "apply", "--mode=" + mode, policy], check=True, stdout=subprocess.DEVNULL)
            figures["ooms"].setdefault(f"{label} {mode}", []).append(memcg_oom(mode))
            subprocess.run([agent, "detach"], check=True, stdout=subprocess.DEVNULL)
print(json.dumps(figures))
"""


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="REF", help="also measure the policies as REF builds and applies them")
    parser.add_argument("--ooms", type=int, help="memcg OOMs per policy and mode (default: --runs; 0: explain only)")
    args = parser.parse_args()
    with fleet.bench_host("bench=1:patched", memory_mib=1024) as (host, work):
        memhog = work / "memhog"
        subprocess.run(["gcc", "-O2", "-static", "-o", str(memhog), str(TESTS / "kernel" / "memhog.c")], check=True)
        install_agent(host)
        fleet.copy_to(host, memhog, "/root/memhog")
        variants = []
        builds = {"now": {name: (None, build_policy(policy, work / "objects")) for name, policy in POLICIES.items()}}
        if args.baseline:
            builds[args.baseline] = build_baseline(args.baseline, work, POLICIES)
        for label, built in builds.items():
            agent = contract.COMMAND
            for name, (tree, entry) in built.items():
                remote = f"/root/{label}-{name}"
                upload_policy(host, entry, remote)
                if tree is not None and agent == contract.COMMAND:
                    agent = install_baseline_agent(host, tree, label)
                variants.append(f"{name}@{label}={agent}:{remote}")
        guest = work / "cost.py"
        guest.write_text(GUEST)
        fleet.copy_to(host, guest, "/root/cost.py")
        ooms = args.runs if args.ooms is None else args.ooms
        result = fleet.run_on(host, f"python3 /root/cost.py {args.tasks} {args.runs} {ooms} {' '.join(variants)}",
                              timeout=600 * args.runs)
    figures = json.loads(result.stdout)
    print(f"{args.tasks} extra tasks, {args.runs} runs each, medians; the policy applied by its own agent:")
    for label, runs in figures["status_s"].items():
        status, explain, preview = (median(figures[kind][label]) for kind in ("status_s", "explain_s", "preview_s"))
        print(f"  {label:16}: status {status:.3f} s; explain {explain:.3f} s, ratio to status {explain / status:.2f}; "
              f"explain DIR (a preview) {preview:.3f} s, ratio {preview / status:.2f}")
    for label, runs in figures["ooms"].items():
        per_oom = median([run["ns"] for run in runs]) / 1000
        calls = median([run["runs"] for run in runs])
        print(f"  memcg OOM, {label:24}: the policy's programs ran {per_oom:8.1f} us in {calls:.0f} calls per OOM "
              f"(first victims: {', '.join(str(run['victim']) for run in runs)}; "
              f"killed in order: {'; '.join('+'.join(run['killed']) or '-' for run in runs)}; "
              f"kills per scenario: {', '.join(str(run['ooms']) for run in runs)}; the OOM killer's invocations "
              f"(memory.events oom): {', '.join(str(run['invocations']) for run in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

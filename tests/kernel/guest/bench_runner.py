"""Run on a lab host by tests/benchmarks/apply_vs_bcc.py: times whole processes.

  bench_runner.py RUNS LABEL=AGENT:POLICY_DIR...

For each run, the wall time and peak RSS (wait4's ru_maxrss) of one whole
process: `AGENT apply POLICY_DIR` (after an untimed detach) of each agent in
turn (this checkout's bpfoomctl, an earlier commit's), then bcc
(/usr/bin/python3, python3-bpfcc) compiling and loading a counter-only
KMOD_RET evaluator and attaching it, and a single try at bcc building the real evaluator
(one that reads task->comm). Prints JSON.
"""

import json
import os
import statistics
import subprocess
import sys
import time

BCC_COUNTER = r'''
from bcc import BPF, lib
text = """
struct oom_control;
BPF_ARRAY(evaluations, u64, 1);
KMOD_RET(bpf_oom_evaluate_task, struct task_struct *task, struct oom_control *oc)
{
    int zero = 0;
    u64 *count = evaluations.lookup(&zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
"""
b = BPF(text=text)
fn = b.load_func(b"kmod_ret__bpf_oom_evaluate_task", BPF.TRACING)
assert lib.bpf_attach_kfunc(fn.fd) >= 0, "attach failed"
'''

BCC_REAL = r'''
from bcc import BPF, lib
text = """
#include <linux/sched.h>
struct oom_control;
KMOD_RET(bpf_oom_evaluate_task, struct task_struct *task, struct oom_control *oc)
{
    char comm[16];
    bpf_probe_read_kernel_str(comm, sizeof(comm), task->comm);
    return comm[0] == 'h' ? 3 : 0;
}
"""
b = BPF(text=text)
fn = b.load_func(b"kmod_ret__bpf_oom_evaluate_task", BPF.TRACING)
assert lib.bpf_attach_kfunc(fn.fd) >= 0, "attach failed"
'''


def timed(argv):
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - start
    error = process.stderr.read().decode(errors="replace")[-1500:]
    return {"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "ok": os.waitstatus_to_exitcode(status) == 0,
            "error": error}


def summary(samples):
    ok = [s for s in samples if s["ok"]]
    if not ok:
        return {"ok": False, "error": samples[-1]["error"]}
    return {"ok": True, "runs": len(ok), "median_wall_s": statistics.median(s["wall_s"] for s in ok),
            "median_maxrss_mib": statistics.median(s["maxrss_kib"] for s in ok) / 1024,
            "walls_s": [round(s["wall_s"], 3) for s in ok]}


def main(argv):
    runs = int(argv[1])
    agents = {label: spec.split(":", 1) for label, spec in (arg.split("=", 1) for arg in argv[2:])}
    applies = {label: [] for label in agents}
    for _run in range(runs):
        for label, (agent, policy_dir) in agents.items():
            subprocess.run([agent, "detach"], stdout=subprocess.DEVNULL, check=True)
            applies[label].append(timed([agent, "apply", policy_dir]))
            subprocess.run([agent, "detach"], stdout=subprocess.DEVNULL, check=True)
    with open("/tmp/bcc_counter.py", "w") as handle:
        handle.write(BCC_COUNTER)
    with open("/tmp/bcc_real.py", "w") as handle:
        handle.write(BCC_REAL)
    bcc = [timed(["/usr/bin/python3", "/tmp/bcc_counter.py"]) for _run in range(max(3, runs // 2))]
    real = timed(["/usr/bin/python3", "/tmp/bcc_real.py"])
    print(json.dumps({"apply": {label: summary(samples) for label, samples in applies.items()}, "bcc_counter": summary(bcc),
                      "bcc_real_evaluator": {"ok": real["ok"], "wall_s": real["wall_s"],
                                             "error_tail": real["error"][-600:]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

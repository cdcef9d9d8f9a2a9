# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which process the policy would kill in an OOM now, and which one the kernel would kill without it:
the policy's own iter/task program ranks every task; nothing is attached, nothing changes."""

from __future__ import annotations

import ctypes
import os
import time

from . import abi, kernel, libbpf
from .attach import open_policy
from .contract import EXPLAIN_PROGRAM, VMLINUX_BTF, ExitCode, Failure
from .journal import basis_view
from .store import split_key

EXPLAIN_TOP = 10


def _oom_score(pid):
    """The kernel's own /proc/PID/oom_score (what it would kill by without a policy), or None once gone.

    Read once per task (1,000 tasks, 1,000 reads): with os.open and os.read, not open(), whose buffered text
    file object made these reads two thirds of explain's own time on the lab's hosts."""
    try:
        fd = os.open(f"/proc/{pid}/oom_score", os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 32))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def observers(pid=None):
    """This process and the chain that ran it (a module's interpreter, its shell, an SSH session), below PID 1:
    they exist because someone asked, and are gone before any OOM this explain is about."""
    chain, pid = [], pid or os.getpid()
    while pid > 1 and pid not in chain:
        chain.append(pid)
        pid = kernel.proc_stat_field(pid, 4) or 0        # the parent's PID
    return chain


def run_explain(policy_dir, manifest, pinned_key=None):
    """Every process as the policy's iter/task program ranks it now: a list of abi.Candidate. pinned_key: the
    running policy's key, whose host input maps it shares (open_policy)."""
    lib = libbpf.lib()
    obj, _reports = open_policy(policy_dir, manifest, [EXPLAIN_PROGRAM], pinned_key=pinned_key)
    try:
        link = lib.bpf_program__attach_iter(lib.bpf_object__find_program_by_name(obj, EXPLAIN_PROGRAM.encode()), None)
        if not link:
            raise Failure(ExitCode.FAILED, f"creating the task iterator of {manifest['name']!r} failed: "
                                           f"{libbpf.errno_text()}")
        try:
            fd = lib.bpf_iter_create(lib.bpf_link__fd(link))
            if fd < 0:
                raise Failure(ExitCode.FAILED, f"running the task iterator of {manifest['name']!r} failed: "
                                               f"{libbpf.errno_text()}")
            with os.fdopen(fd, "rb") as handle:
                data = handle.read()
        finally:
            lib.bpf_link__destroy(link)
    finally:
        lib.bpf_object__close(obj)
    size = ctypes.sizeof(abi.Candidate)
    return [abi.Candidate.from_buffer_copy(data, offset) for offset in range(0, len(data) - size + 1, size)]


def _in_domain(cgroup, memcg):
    """Whether a task of cgroup is a candidate of an OOM of memcg (None: a global OOM)."""
    return not memcg or cgroup == memcg or cgroup.startswith(memcg.rstrip("/") + "/")


def _rank(candidate):
    return "never" if candidate.rank == abi.BPFOOM_RANK_NEVER else candidate.rank


def exempt_candidates(candidates, memcg, paths):
    """The tasks no OOM kills whatever the policy says (oom_score_adj -1000, as sshd's listener sets itself), with
    the policy's rank and what it rested on: explain shows them apart, so that "is sshd protected?" has an answer."""
    return [{"pid": c.pid, "comm": abi.text(c.comm), "cgroup": paths.get(c.cgroup_id, str(c.cgroup_id)),
             "rank": _rank(c), "oom_score_adj": -1000, "decided_by": basis_view(c.basis, paths)}
            for c in candidates if c.oom_score_adj == -1000 and _in_domain(paths.get(c.cgroup_id, ""), memcg)]


def rank_candidates(candidates, tie_breaker, memcg=None, paths=None, left_out=()):
    """The tasks an OOM would weigh, each with the policy's rank and the kernel's oom_score, in the policy's
    order (its victim first), and the kernel's own victim. memcg: a cgroup path, for an OOM of that cgroup;
    None for a global OOM. left_out: PIDs not weighed (observers()). The frame's rules: oom_score_adj -1000 is
    never a victim; BPFOOM_RANK_NEVER is skipped in a memcg OOM and ranks last in a global one."""
    paths = paths if paths is not None else {}
    tasks = []
    for candidate in candidates:
        if candidate.pid in left_out:
            continue
        cgroup = paths.get(candidate.cgroup_id, str(candidate.cgroup_id))
        if not _in_domain(cgroup, memcg):
            continue
        oom_score = _oom_score(candidate.pid)
        if oom_score is None or candidate.oom_score_adj == -1000:
            continue
        never = candidate.rank == abi.BPFOOM_RANK_NEVER
        tasks.append({"pid": candidate.pid, "comm": abi.text(candidate.comm), "cgroup": cgroup,
                      "rank": _rank(candidate), "oom_score": oom_score,
                      "decided_by": basis_view(candidate.basis, paths),
                      "_order": (-2 ** 31 if never else candidate.rank, candidate.start_time)})
    tie = {"youngest": lambda t: -t["_order"][1], "oldest": lambda t: t["_order"][1]}.get(
        tie_breaker, lambda t: -t["oom_score"])
    kernel_victim = max(tasks, key=lambda t: t["oom_score"], default=None)
    by_policy = sorted((t for t in tasks if not (memcg and t["rank"] == "never")),
                       key=lambda t: (-t["_order"][0], tie(t)))
    for task in tasks:
        del task["_order"]
    return by_policy, kernel_victim


def explain(store, policy_dir=None, memcg=None, top=EXPLAIN_TOP):
    """Which process the policy would kill now (in a global OOM, or an OOM of cgroup memcg), and which one the
    kernel would kill without it; for the desired policy, or any built one (a preview: nothing is attached).
    The desired policy ranks by what its pinned host input maps hold, as it would decide now; a preview asks
    the host anew (systemd, pidfiles)."""
    running = None
    if policy_dir is None:
        running = store.desired()
        if not running:
            raise Failure(ExitCode.FAILED, "no policy runs here: give the directory of a built policy "
                                           "(bpfoomctl explain DIR)")
        policy_dir = store.policy_dir(split_key(running)[0])
    manifest = store.manifest(policy_dir)
    if not os.path.exists(VMLINUX_BTF):     # not parsed here: libbpf parses it once, for the load
        raise kernel.no_btf_failure("no BPF program can rank its tasks")
    paths = kernel.cgroup_paths()
    if memcg and memcg not in paths.values():
        raise Failure(ExitCode.FAILED, f"no cgroup {memcg} under /sys/fs/cgroup: give a path such as "
                                       "/system.slice/nginx.service")
    started = time.monotonic()
    candidates = run_explain(policy_dir, manifest, running)
    left_out = observers()
    ranked, kernel_victim = rank_candidates(candidates, manifest.get("tie_breaker", "kernel"), memcg, paths,
                                            left_out)
    victim = ranked[0] if ranked else None
    return {"changed": False, "policy_name": manifest["name"], "policy_hash": manifest["hash"],
            "tie_breaker": manifest.get("tie_breaker", "kernel"),
            "oom": f"memcg {memcg}" if memcg else "global", "tasks": len(ranked), "would_kill": victim,
            "kernel_would_kill": kernel_victim,
            "agrees": bool(victim and kernel_victim and victim["pid"] == kernel_victim["pid"]),
            "candidates": ranked[:top], "kernel_exempt": exempt_candidates(candidates, memcg, paths)[:top],
            "left_out": {"pids": left_out, "why": "this explain and the processes that ran it: gone before any OOM"},
            "seconds": round(time.monotonic() - started, 3)}

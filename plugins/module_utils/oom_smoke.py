# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One provoked memcg OOM, confined to a transient cgroup: what did the kernel kill, and under which policy?

Used by the policy_smoke module on managed hosts and, copied as a plain file,
by the kernel tests (tests/kernel/guest/oom_scenario.py). Standard library only.

The scenario: a fresh cgroup v2 with memory.max=LIMIT and no swap, in a
transient scope systemd delegates to the test (DELEGATED_SCOPE); one "hog" per
process spec, started in order, each holding its MiB (every
page written, so all of it is charged) before the next starts; the last one
pushes the cgroup over its limit (at nice 19: see SECOND_OOM_RACE). Then it
waits until a hog is killed or the timeout passes (an ABORT or kill-nothing
policy leaves the last charge retrying). Every hog is killed and the cgroup
removed on every path; nothing outside the cgroup is ever signalled. The
kernel's reports are read from /dev/kmsg from where it stood at the start, and
only those about this cgroup are kept: the host's log is never cleared.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

CGROUP_ROOT = "/sys/fs/cgroup"

# DELEGATED_SCOPE: on a host run by systemd the cgroup tree is systemd's (its single-writer rule); a
# program makes cgroups only in a subtree systemd delegated to it. So the test's cgroup lives in a
# transient scope (systemd-run --scope -p Delegate=yes), held by a sleeping process, in a slice of its
# own (a policy that avoids system.slice or user.slice must not spare the hogs); systemd nests a slice by
# the dashes of its name: /bpfoom.slice/bpfoom-smoke.slice/bpfoom-smoke-PID.scope/smoke. The holder moves
# to a child of the scope, so the scope may enable the memory controller for its children. Without systemd the test's cgroup is a child of the
# root, as before.
SMOKE_SLICE = "bpfoom-smoke.slice"

# SECOND_OOM_RACE: the victim's exit_mmap() marks it done for the OOM killer
# (MMF_OOM_SKIP) before it frees its pages; a trigger that retries its charge
# in that gap makes a second OOM, which kills a second hog. Measured on a
# one-CPU lab host (tests/benchmarks/smoke_second_oom.py): 1 to 14 smoke
# tests in 40 with the trigger at nice 0; at nice 19, so that the dying victim
# keeps the CPU, none in 210. On hosts with more CPUs the two run side by
# side, so the victim is the first hog the kernel killed (always the policy's
# choice in those runs), and later kills are only reported.

# A hog in Python, so hosts need no compiler: name itself (comm), write one
# byte per page of private memory (a heap, as the C hog of the tests has),
# say "ready", sleep until killed.
PYTHON_HOG = r"""
import mmap, signal, sys
name, mib = sys.argv[1], int(sys.argv[2])
with open("/proc/self/comm", "w") as comm:
    comm.write(name[:15])
memory = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for offset in range(0, mib << 20, 4096):
    memory[offset] = 1
print("ready", flush=True)
while True:
    signal.pause()
"""


def python_hog(name, mib):
    return [sys.executable, "-c", PYTHON_HOG, name, str(mib)]


def _write(path, value):
    with open(path, "w") as handle:
        handle.write(value)


class KernelLog:
    """The kernel's log records written after this object was made (reads /dev/kmsg, clears nothing)."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new_lines(self):
        lines = []
        while True:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except OSError as error:
                if error.errno == errno.EPIPE:      # records overwritten while we read: go on
                    continue
                if error.errno == errno.EAGAIN:
                    break
                raise
            lines.append(record.split(";", 1)[-1].split("\n", 1)[0])
        return lines

    def close(self):
        os.close(self.fd)


def _enter(procs, nice):
    """In the hog, before it allocates anything: join its cgroup, lower its priority."""
    _write(procs, str(os.getpid()))
    os.nice(nice)


def reports_about(lines, cgroup_path):
    """The kernel's OOM reports about one memcg: [(invoked line, Killed process line or None)].

    A report runs from an "invoked oom-killer" line to the next; it is about
    this memcg when it names the memcg's path (the memcg statistics header,
    and the oom-kill line when something was killed).
    """
    starts = [index for index, line in enumerate(lines) if "invoked oom-killer" in line] + [len(lines)]
    ours = re.compile(re.escape(cgroup_path) + r"[:,/]")
    reports = []
    for start, end in zip(starts, starts[1:]):
        report = lines[start:end]
        if any(ours.search(line) for line in report):
            reports.append((report[0], next((line for line in report if "Killed process" in line), None)))
    return reports


def run(processes, limit_mib, timeout, hog_command=python_hog, before_trigger=None, pid_dir=None, trigger_nice=19):
    """Provoke the OOM; return what happened.

    processes: [(name, mib, child cgroup or None)], the trigger last.
    before_trigger: called once every process but the last holds its memory,
    with {name: pid} (to apply a policy that needs those PIDs).
    pid_dir: when set, each hog's PID is written to PID_DIR/NAME.pid meanwhile.
    trigger_nice: the trigger's nice value (SECOND_OOM_RACE; other values for benchmarks only).
    """
    if not os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        raise RuntimeError(f"{CGROUP_ROOT} is not a cgroup v2 hierarchy: the smoke test needs the unified hierarchy")
    scope = DelegatedScope(f"bpfoom-smoke-{os.getpid()}", timeout) if DelegatedScope.available() else None
    parent = scope.path if scope else CGROUP_ROOT
    try:
        _enable_memory(parent)
        cgroup = os.path.join(parent, "smoke" if scope else f"bpfoom-smoke-{os.getpid()}")
        log = KernelLog()
        os.mkdir(cgroup)
    except BaseException:
        if scope:
            scope.close()
        raise
    cgroup_name = cgroup[len(CGROUP_ROOT) + 1:]
    hogs, pid_files = {}, []
    try:
        _write(os.path.join(cgroup, "memory.max"), f"{limit_mib}M")
        if os.path.exists(os.path.join(cgroup, "memory.swap.max")):
            _write(os.path.join(cgroup, "memory.swap.max"), "0")
        for position, (name, mib, child) in enumerate(processes):
            trigger = position == len(processes) - 1
            home = os.path.join(cgroup, child) if child else cgroup
            os.makedirs(home, exist_ok=True)
            if trigger and before_trigger:
                before_trigger({hog_name: hog.pid for hog_name, hog in hogs.items()})
            # The hog joins its cgroup before it allocates anything (preexec runs in the child), and runs while
            # the next one starts: run_command waits for its command and has no preexec, so Popen.
            hogs[name] = subprocess.Popen(  # pylint: disable=ansible-bad-function
                hog_command(name, mib), stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda procs=os.path.join(home, "cgroup.procs"), nice=trigger_nice if trigger else 0:
                    _enter(procs, nice))
            if pid_dir:
                pid_files.append(os.path.join(pid_dir, f"{name}.pid"))
                _write(pid_files[-1], str(hogs[name].pid))
            if not trigger and hogs[name].stdout.readline().strip() != "ready":
                raise RuntimeError(f"{name} did not get its {mib} MiB under the {limit_mib} MiB limit: "
                                   "raise limit_mib or lower the sizes")
        deadline = time.monotonic() + timeout
        timed_out = True
        while time.monotonic() < deadline:
            if any(hog.poll() is not None for hog in hogs.values()):
                time.sleep(1)       # let the victim's exit and the report settle
                timed_out = False
                break
            time.sleep(0.2)
        killed = sorted(name for name, hog in hogs.items() if hog.poll() == -signal.SIGKILL)
    finally:
        for hog in hogs.values():
            if hog.poll() is None:
                hog.kill()
            hog.wait()
        for path in pid_files:
            if os.path.exists(path):
                os.unlink(path)
        _remove_cgroup(cgroup, {child for _name, _mib, child in processes if child})
        if scope:
            scope.close()
        lines = log.new_lines()
        log.close()
    reports = reports_about(lines, f"/{cgroup_name}")
    names = [m.group(1) for invoked, _killed in reports for m in [re.search(r"policy_name=(\S*),", invoked)] if m]
    kill_lines = [killed_line for _invoked, killed_line in reports if killed_line]
    return {
        "cgroup": f"/{cgroup_name}",
        "victim": first_victim(kill_lines, {hog.pid: name for name, hog in hogs.items()}, killed),
        "killed": killed,
        "timed_out": timed_out,
        "reports": [invoked for invoked, _killed in reports],
        "policy_names": names,
        "no_victim": any("no killable processes" in line for line in lines),
        "kill_lines": kill_lines,
    }


def first_victim(kill_lines, names_by_pid, killed):
    """The hog the first OOM killed: the policy's choice among all of them (later kills: SECOND_OOM_RACE)."""
    for line in kill_lines:
        match = re.search(r"Killed process (\d+) ", line)
        if match and int(match.group(1)) in names_by_pid:
            return names_by_pid[int(match.group(1))]
    return killed[0] if len(killed) == 1 else None      # a kill whose report the log rate limit dropped


def _enable_memory(parent):
    """The memory controller for parent's children (a no-op where it is on already)."""
    with open(os.path.join(parent, "cgroup.subtree_control")) as handle:
        if "memory" not in handle.read().split():
            _write(os.path.join(parent, "cgroup.subtree_control"), "+memory")


class DelegatedScope:
    """A transient scope systemd delegates to this process (DELEGATED_SCOPE), held until close()."""

    @staticmethod
    def available():
        return os.path.isdir("/run/systemd/system") and shutil.which("systemd-run") is not None

    def __init__(self, name, timeout):
        # The holder sleeps longer than the test may last; close() ends it sooner (run_command would wait for it).
        self.holder = subprocess.Popen(  # pylint: disable=ansible-bad-function
            ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={name}.scope", f"--slice={SMOKE_SLICE}",
             "--property=Delegate=yes", "sleep", str(int(timeout) + 300)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline, path = time.monotonic() + 30, ""
        while True:            # systemd-run execs the holder once its scope exists: its cgroup says when, and where
            try:
                with open(f"/proc/{self.holder.pid}/cgroup") as handle:
                    path = handle.read().strip().partition("::")[2]
            except OSError:
                pass
            if path.endswith(f"/{name}.scope"):
                break
            if self.holder.poll() is not None or time.monotonic() > deadline:
                error = self.holder.stderr.read().decode(errors="replace").strip() if self.holder.poll() is not None \
                    else "no scope within 30 s"
                self.holder.kill()
                self.holder.wait()
                raise RuntimeError(f"systemd-run --scope -p Delegate=yes failed: {error}")
            time.sleep(0.05)
        self.path = CGROUP_ROOT + path
        # A cgroup with processes cannot give its children controllers: the holder goes one level down.
        os.mkdir(os.path.join(self.path, "holder"))
        _write(os.path.join(self.path, "holder", "cgroup.procs"), str(self.holder.pid))

    def close(self):
        """End the holder; systemd removes the scope once it is empty (the test's cgroups are gone by then)."""
        self.holder.kill()
        self.holder.wait()
        self.holder.stderr.close()
        _remove_cgroup(os.path.join(self.path, "holder"), set())


def _remove_cgroup(cgroup, children):
    """rmdir waits for the killed hogs to leave; give them a few seconds."""
    for _attempt in range(100):
        try:
            for child in children:
                if os.path.isdir(os.path.join(cgroup, child)):
                    os.rmdir(os.path.join(cgroup, child))
            if os.path.isdir(cgroup):
                os.rmdir(cgroup)
            return
        except OSError:
            time.sleep(0.1)

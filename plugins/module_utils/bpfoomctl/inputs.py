# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host inputs: what a policy resolves on this host.

A manifest's host_inputs (policy_catalog.Template.host_inputs) name maps of the object to fill here,
when the policy is applied and again while it runs (the events loop), because what they resolve to
changes: a unit restarts with a new PID, a pidfile is rewritten, a unit appears or goes.
  {"map": M, "pid_of": {"unit": U} | {"pidfile": F}}  key: the PID (u32), value: its start time (u64, the
      starttime of /proc/PID/stat): the policy selects that process only while the PID is still its own.
  {"map": M, "units": [{"name": N, "value": V}, ...]}  key: cgroup_name_hash() of the unit N resolves to
      (an alias to its unit: sshd.service is ssh.service on Debian), value: struct bpfoom_unit.
"""

from __future__ import annotations

import ctypes
import os

from . import abi, kernel, libbpf, pins
from .contract import ExitCode, Failure
from .store import check_safe

REFRESH_EVERY_S = 30                # units and unit targets are asked of systemd again this often
NO_UNIT_STATES = ("not-found", "bad-setting", "error")     # a LoadState that means: no such unit here


def cgroup_name_hash(name):
    """FNV-1a 64 over a cgroup name's first 63 bytes zero-padded to 64: bpfoom_kernfs_name_hash() in bpfoom_match.h."""
    value = 0xcbf29ce484222325
    for byte in name.encode()[:63].ljust(64, b"\0"):
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value


def systemctl_show(names, properties):
    """[{property: value}] of each unit name, in order, from one systemctl call; None without systemd."""
    import subprocess  # only policies with host inputs need it: keep it off every other command's start-up
    try:
        # The agent (a systemd service, outside any module) resolves the policy's units: no run_command there.
        result = subprocess.run(  # pylint: disable=ansible-bad-function
            ["systemctl", "show", "--property", ",".join(properties), "--", *names],
            capture_output=True, text=True, check=False, env={"LANG": "C", "PATH": os.defpath})
    except OSError:
        return None
    if result.returncode != 0:
        return None
    blocks = [dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
              for block in result.stdout.strip("\n").split("\n\n")]
    return blocks if len(blocks) == len(names) else None


def resolve_units(names):
    """{name: the unit it is on this host, or None when there is none}; names as given without systemd."""
    if not names:
        return {}
    shown = systemctl_show(names, ("Id", "LoadState"))
    if shown is None:
        return {name: name for name in names}
    return {name: (unit.get("Id") or name) if unit.get("LoadState") not in NO_UNIT_STATES else None
            for name, unit in zip(names, shown)}


def start_ticks(pid):
    """The starttime of /proc/PID/stat (clock ticks since boot), or None when no such process runs."""
    return kernel.proc_stat_field(pid, 22)


def resolve_target(pid_of):
    """(PID, start ticks, None) of a unit's main process or a pidfile's, or (None, None, why it selects nobody)."""
    if "unit" in pid_of:
        shown = systemctl_show([pid_of["unit"]], ("MainPID", "LoadState"))
        if shown is None:
            return None, None, f"{pid_of['unit']}: systemd did not answer"
        if shown[0].get("LoadState") in NO_UNIT_STATES:
            return None, None, f"{pid_of['unit']} is no unit on this host"
        pid = int(shown[0].get("MainPID") or 0)
        if not pid:
            return None, None, f"{pid_of['unit']} is not running"
    else:
        path = pid_of["pidfile"]
        try:
            # A pidfile another user can write would let that user pick the victim.
            check_safe(path, "trust a PID others could have written (they would choose the victim)")
            with open(path) as handle:
                pid = int(handle.read().split()[0])
        except FileNotFoundError:
            return None, None, f"{path} does not exist (the process is not running)"
        except Failure as failure:
            return None, None, str(failure)
        except (OSError, ValueError, IndexError):
            return None, None, f"{path} holds no PID"
        if pid <= 1:
            return None, None, f"{path} names PID {pid}, which is never a target"
    start = start_ticks(pid)
    if start is None:
        return None, None, f"{pid_of.get('unit') or pid_of['pidfile']} names PID {pid}, which no process has"
    return pid, start, None


def wanted_entries(host_input):
    """What a host input's map should hold now: ({key bytes: value bytes}, its report)."""
    if "pid_of" in host_input:
        source = host_input["pid_of"].get("unit") or host_input["pid_of"]["pidfile"]
        pid, start, problem = resolve_target(host_input["pid_of"])
        report = {"map": host_input["map"], "target": source, "pid": pid, "problem": problem and
                  f"{problem}: the policy selects nobody until it runs"}
        if pid is None:
            return {}, report
        return {bytes(ctypes.c_uint32(pid)): bytes(ctypes.c_uint64(start))}, report
    names = [unit["name"] for unit in host_input["units"]]
    resolved = resolve_units(names)
    missing = [name for name in names if resolved[name] is None]
    entries = {bytes(ctypes.c_uint64(cgroup_name_hash(resolved[unit["name"]] or unit["name"]))):
               bytes(abi.Unit(value=unit["value"])) for unit in host_input["units"]}
    these = "these names" if len(missing) > 1 else "this name"
    report = {"map": host_input["map"], "units": {name: resolved[name] for name in names},
              "problem": f"{', '.join(missing)}: no such unit on this host, so the policy matches nothing by {these}"
              if missing else None}
    return entries, report


def input_sizes(host_input):
    """(key size, value size) of a host input's map."""
    return (4, 8) if "pid_of" in host_input else (8, ctypes.sizeof(abi.Unit))


def held_targets(fd):
    """Whether a pinned target map (fd) still holds a running process, the one its PID names."""
    held = libbpf.map_entries(fd, 4, 8)
    return bool(held) and all(start_ticks(ctypes.c_uint32.from_buffer_copy(key).value) ==
                              ctypes.c_uint64.from_buffer_copy(value).value for key, value in held.items())


def fill(map_fd_of, manifest):
    """Fill each host input's map (map_fd_of(name) gives its fd); return the reports. Generic: no template is
    known here."""
    reports = []
    for host_input in manifest.get("host_inputs", []):
        fd = map_fd_of(host_input["map"])
        if fd < 0:
            raise Failure(ExitCode.FAILED, f"policy {manifest['name']!r} has no map {host_input['map']}: it was built "
                                           "by another bpfoom.fleet; build and roll it out again")
        wanted, report = wanted_entries(host_input)
        report["changed"] = libbpf.sync_map(fd, wanted, *input_sizes(host_input))
        reports.append(report)
    return reports


def refresh(key, manifest):
    """The pinned policy's host inputs made current, through their pins; the reports."""
    fds = []

    def map_fd_of(name):
        fds.append(pins.pinned_input_fd(key, name))
        return fds[-1]
    try:
        return fill(map_fd_of, manifest)
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def held(key, manifest):
    """What the running policy's host input maps hold now and what they should (status; changes nothing)."""
    reports = []
    for host_input in manifest.get("host_inputs", []):
        wanted, report = wanted_entries(host_input)
        fd = pins.pinned_input_fd(key, host_input["map"])
        if fd < 0:
            report["current"] = None
        else:
            report["current"] = libbpf.map_entries(fd, *input_sizes(host_input)) == wanted
            os.close(fd)
        if report["current"] is False and not report["problem"]:
            report["problem"] = f"{host_input['map']} is not current (the agent refreshes it every 2 s while it runs)"
        reports.append(report)
    return reports


def notes(reports):
    """One line per host input, for apply's notes."""
    lines = []
    for report in reports:
        if "target" in report:
            lines.append(report["problem"] or f"{report['target']}: PID {report['pid']}")
        else:
            aliases = [f"{name} is {unit}" for name, unit in report["units"].items() if unit and unit != name]
            lines += [report["problem"]] if report["problem"] else []
            lines += [f"{report['map']}: {', '.join(aliases)}"] if aliases else []
    return lines


def problems(reports):
    return [report["problem"] for report in reports if report["problem"]]


def name_of(report):
    """What a host input names: its target, or its units."""
    return report.get("target") or ", ".join(report["units"])

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the kernel holds and the host offers: its BTF, bpffs, libbpf, the links on the hook and on what shadow
mode observes, and each program's identity and counters read from its own maps."""

from __future__ import annotations

import ctypes
import os

from . import abi, libbpf
from .contract import (BPFFS, COUNTERS_MAP, HOOK_FUNCTIONS, IDENTITY_MAP, SHADOW_FUNCTIONS, VMLINUX_BTF, ExitCode,
                       Failure)

_VMLINUX_BTF = []


def bpffs_mounted():
    with open("/proc/self/mounts") as mounts:      # (the unit's ProcSubset=pid hides /proc/mounts)
        return any(line.split()[1:3] == [BPFFS, "bpf"] for line in mounts)


LOCKDOWN = "/sys/kernel/security/lockdown"


def lockdown_mode(path=LOCKDOWN):
    """The kernel's lockdown mode ("none", "integrity", "confidentiality"), or None where it cannot say."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    return next((word.strip("[]") for word in text.split() if word.startswith("[")), None)


def lockdown_hint(mode, verifier_log):
    """Why a program the verifier rejected cannot load on a locked-down kernel, or "".

    lockdown=confidentiality (a Secure Boot host can choose it) forbids the helpers that read kernel memory;
    the policies read each task's name with one (bpf_probe_read_kernel_str, seen as bpf_probe_read_str #45 in
    the log), so their programs are rejected there whatever they are: a verifier log alone would hide that.
    """
    if mode != "confidentiality" or "probe_read" not in verifier_log:
        return ""
    return ("this kernel is locked down (lockdown=confidentiality, /sys/kernel/security/lockdown), which forbids "
            "the BPF helpers that read kernel memory: no bpfoom policy can load here; boot with lockdown=integrity "
            "(or none) to run one")


def proc_stat_field(pid, number):
    """Field NUMBER (as proc(5) counts them, from 1) of /proc/PID/stat as an integer, or None when no such process
    runs. Read after the command name's closing parenthesis: a process may put any character in its name."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rpartition(")")[2].split()[number - 3])
    except (OSError, ValueError, IndexError):
        return None


def cgroup_paths(root="/sys/fs/cgroup"):
    """{cgroup id: path} of the cgroup v2 hierarchy (a cgroup's id is its directory's inode number)."""
    paths = {}
    for directory, _subdirs, _files in os.walk(root):
        paths[os.stat(directory).st_ino] = directory[len(root):] or "/"
    return paths


class CgroupPaths:
    """{cgroup id: path} for the events loop, which names cgroups that may be gone by the time it writes.

    The cgroup a journal entry names is often removed before the entry is written: systemd stops the unit
    whose process the OOM killer took and removes its cgroup, racing the agent's read of the ring buffer. So
    the loop calls follow() each turn, which walks the hierarchy again only when its number of cgroups
    changed (one read of the root's cgroup.stat), and a lookup answers from the last walk or the one before
    it: a cgroup that existed at any turn before the OOM is named even once removed. A cgroup created and
    killed within one turn (2 s) can still be missed: its entry then says "cgroup id N".
    """

    def __init__(self, root="/sys/fs/cgroup"):
        self.root, self.descendants, self.paths, self.before = root, None, {}, {}

    def _count(self):
        try:
            with open(os.path.join(self.root, "cgroup.stat")) as stat:
                return next(int(line.split()[1]) for line in stat if line.startswith("nr_descendants "))
        except (OSError, ValueError, IndexError, StopIteration):
            return None

    def _walk(self):
        self.before, self.paths = self.paths, cgroup_paths(self.root)

    def follow(self):
        count = self._count()
        if count is not None and count != self.descendants:
            self._walk()
        self.descendants = count

    def get(self, cgroup_id, default=None):
        if cgroup_id not in self.paths and cgroup_id not in self.before:
            self._walk()
        return self.paths.get(cgroup_id, self.before.get(cgroup_id, default))


def btf_names(names, path=VMLINUX_BTF, chunk=1 << 16):
    """{name: whether the kernel's BTF has it in its string table}, or None without BTF: read in chunks, not
    parsed. A function of the kernel has its name there; a name that is absent is no function, and a name that
    is present is one for these names (unique to the functions they name), which libbpf's load confirms.
    Parsing the BTF instead kept megabytes beside the copy libbpf parses for the load."""
    needles = {name: b"\0" + name.encode() + b"\0" for name in names}
    keep = max(map(len, needles.values())) - 1          # a name across two chunks is found in the second
    found, tail = set(), b""
    try:
        with open(path, "rb") as handle:
            while len(found) < len(needles):
                block = handle.read(chunk)
                if not block:
                    break
                data = tail + block
                found.update(name for name, needle in needles.items() if needle in data)
                tail = data[-keep:]
    except OSError:
        return None
    return {name: name in found for name in names}


def vmlinux_btf():
    """The kernel's BTF (a libbpf pointer), parsed once per run (it is megabytes); None without BTF."""
    if not _VMLINUX_BTF:
        _VMLINUX_BTF.append(libbpf.lib().btf__load_vmlinux_btf())
    return _VMLINUX_BTF[0]


def missing_functions(names):
    """Those of names the kernel's BTF does not have as functions (so nothing can attach to them)."""
    btf = vmlinux_btf()
    if not btf:
        return list(names)
    return [name for name in names if libbpf.lib().btf__find_by_name_kind(btf, name.encode(), abi.BTF_KIND_FUNC) < 0]


def no_btf_failure(what):
    return Failure(ExitCode.NO_BTF, f"this kernel ({os.uname().release}) exposes no BTF ({VMLINUX_BTF}): {what}; "
                                    "boot a kernel built with CONFIG_DEBUG_INFO_BTF")


def mode_functions(mode):
    """The kernel functions a policy in mode attaches to (or calls)."""
    return HOOK_FUNCTIONS if mode == "enforce" else SHADOW_FUNCTIONS


def mode_failure(mode):
    """Why this kernel cannot run a policy in mode (a Failure with its own exit code), or None."""
    if not vmlinux_btf():
        return no_btf_failure("no BPF policy can be loaded")
    missing = missing_functions(mode_functions(mode))
    if mode == "enforce":
        return missing and Failure(ExitCode.NO_HOOK, (
            f"this kernel ({os.uname().release}) has no BPF OOM hook: {', '.join(missing)} not in its BTF; boot a "
            "kernel carrying the bpf_oom_evaluate_task series, or run the policy in shadow mode"))
    return missing and Failure(ExitCode.NO_SHADOW_POINTS, (
        f"this kernel ({os.uname().release}) cannot run a shadow policy: {', '.join(missing)} not in its BTF "
        "(inlined, or not traceable), so nothing can observe its OOMs there"))


def link_info(fd, btf):
    """type, ids and, for tracing links, the attach type and the target function's name."""
    info = libbpf.info(fd, abi.LinkInfo)
    if info is None:
        raise Failure(ExitCode.FAILED, f"reading BPF link info failed: {libbpf.errno_text()}")
    target = None
    if info.type == abi.BPF_LINK_TYPE_TRACING and info.target_btf_id:
        btf_type = libbpf.lib().btf__type_by_id(btf, info.target_btf_id)
        if btf_type:
            name = libbpf.lib().btf__name_by_offset(btf, btf_type[0])     # struct btf_type: name_off first
            target = name.decode() if name else None
    return {"link_id": info.id, "prog_id": info.prog_id,
            "attach_type": abi.ATTACH_TYPES.get(info.attach_type, str(info.attach_type)), "target": target}


def _read_map_value(map_fd, map_info, value_type):
    """The single value (key 0) of an array map, as value_type, or None (also when the sizes differ)."""
    if map_info.value_size != ctypes.sizeof(value_type):
        return None
    key, value = ctypes.c_uint32(0), value_type()
    if libbpf.lib().bpf_map_lookup_elem(map_fd, ctypes.byref(key), ctypes.byref(value)) != 0:
        return None
    return value


def program_info(prog_id):
    """Tag, name, and the policy identity and counters from the program's own maps."""
    lib = libbpf.lib()
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return {"prog_id": prog_id, "error": libbpf.errno_text()}
    try:
        map_ids = (ctypes.c_uint32 * 16)()
        info = abi.ProgInfo(nr_map_ids=len(map_ids), map_ids=ctypes.addressof(map_ids))
        length = ctypes.c_uint32(ctypes.sizeof(info))
        if lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
            return {"prog_id": prog_id, "error": libbpf.errno_text()}
        result = {"prog_id": prog_id, "tag": bytes(info.tag).hex(), "prog_name": abi.text(info.name)}
        for map_id in map_ids[:min(info.nr_map_ids, len(map_ids))]:
            map_fd = lib.bpf_map_get_fd_by_id(map_id)
            if map_fd < 0:
                continue
            try:
                map_info = libbpf.info(map_fd, abi.MapInfo)
                map_name = abi.text(map_info.name) if map_info else None
                if map_name == IDENTITY_MAP:
                    identity = _read_map_value(map_fd, map_info, abi.Identity)
                    if identity:
                        result.update(policy_name=abi.text(identity.name), policy_hash=abi.text(identity.hash))
                elif map_name == COUNTERS_MAP:
                    counters = _read_map_value(map_fd, map_info, abi.Counters)
                    if counters:
                        result.update((name, getattr(counters, name)) for name in abi.COUNTER_NAMES)
            finally:
                os.close(map_fd)
        return result
    finally:
        os.close(fd)


def hook_links(btf, known=frozenset()):
    """Every link attached to the hook, ours or not, and every bpfoom program's link on the functions shadow
    mode observes, from the kernel's list of links: (link, its program's info) pairs. Links in `known`
    (the agent's pinned ones, already read through their pins) are left out, so no program is read twice."""
    lib = libbpf.lib()
    links, next_id = [], ctypes.c_uint32(0)
    while lib.bpf_link_get_next_id(next_id.value, ctypes.byref(next_id)) == 0:
        if next_id.value in known:
            continue
        fd = lib.bpf_link_get_fd_by_id(next_id.value)
        if fd < 0:
            continue
        try:
            info = link_info(fd, btf)
        finally:
            os.close(fd)
        if info["target"] not in HOOK_FUNCTIONS and info["target"] not in SHADOW_FUNCTIONS:
            continue
        prog = program_info(info["prog_id"])
        if info["target"] in HOOK_FUNCTIONS or prog.get("policy_hash"):
            links.append((info, prog))
    return links

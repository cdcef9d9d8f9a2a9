# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bpfoomctl: attach, verify and inspect this host's BPF OOM policy.

  bpfoomctl apply [--mode=shadow] POLICY_DIR
                               attach POLICY_DIR/policy.bpf.o (checked against its manifest.json) in
                               enforce mode (it picks the victim; kernels with the hook) or shadow
                               mode (it only records what it would have picked; any kernel with BTF),
                               then detach the previous policy (make-before-break)
  bpfoomctl boot               re-apply the desired policy (the systemd unit's start)
  bpfoomctl detach             detach every bpfoom policy: the kernel's own choice again
  bpfoomctl stop               the systemd unit's stop: detach on a requested stop; keep the
                               policy after a crash of the agent or during a restart
  bpfoomctl rollback           re-apply the last policy that verified before the current one
  bpfoomctl status             what the kernel holds: hook, links, programs, policy names, counters
  bpfoomctl explain [--cgroup=PATH] [--top=N] [POLICY_DIR]
                               which process the policy (the desired one, or POLICY_DIR's, not
                               attached) would kill in an OOM now, global or of cgroup PATH, and
                               which one the kernel would kill without it; changes nothing
  bpfoomctl events [--once] [--metrics-file=PATH]
                               one journal entry per task the policy selected (per OOM in shadow
                               mode); every 10 s, the metrics for node_exporter's textfile
                               collector in PATH

Every command prints JSON on stdout. Python standard library and libbpf1
(through ctypes) only: no compiler, no headers, no bcc on the host.
Installed as /usr/local/lib/bpfoom/bpfoomctl.py (so Python caches its
bytecode) and started by the /usr/local/sbin/bpfoomctl shim.
Exit codes: 0 ok; 1 failed; 3 the kernel lacks the hook; 4 the verifier
rejected the policy; 5 the object does not match its manifest; 6 an unsafe
file or directory; 7 bpffs or libbpf missing; 8 the state directory cannot
be written (full disk, read-only): nothing was changed.
"""

import ctypes
import errno
import fcntl
import json
import os
import stat
import sys
import time

STATE_DIR = "/var/lib/bpfoom"
POLICY_STORE = os.path.join(STATE_DIR, "policies")
DESIRED_FILE = os.path.join(STATE_DIR, "desired")          # hash of the policy to run
GOOD_FILE = os.path.join(STATE_DIR, "last-known-good")     # hashes that verified, newest last
BPFFS = "/sys/fs/bpf"
PIN_ROOT = os.path.join(BPFFS, "bpfoom")
LOCK_FILE = os.path.join(STATE_DIR, "lock")
JOURNAL_SOCKET = "/run/systemd/journal/socket"

HOOK_FUNCTIONS = ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name")
# The programs of each mode of a policy (templates/bpf/frame.bpf.c.j2): program -> (pin, attach type, target).
# A policy is attached in a mode when the kernel holds every link of that mode, on those functions.
MODES = {
    "enforce": {"bpfoom_evaluate_task": ("evaluate", "modify_return", "bpf_oom_evaluate_task"),
                "bpfoom_set_policy_name": ("name", "trace_fentry", "bpf_set_policy_name")},
    "shadow": {"bpfoom_shadow_oom_start": ("oom_start", "trace_fentry", "out_of_memory"),
               "bpfoom_shadow_candidate": ("candidate", "trace_fexit", "oom_badness"),
               "bpfoom_shadow_kill": ("kill", "trace_fentry", "oom_kill_process"),
               "bpfoom_shadow_oom_end": ("oom_end", "trace_fexit", "out_of_memory")},
}
# The ring buffer each mode reads, pinned beside its links.
MODE_EVENTS = {"enforce": "bpfoom_events", "shadow": "bpfoom_shadow_events"}
SHADOW_FUNCTIONS = ("out_of_memory", "oom_badness", "oom_kill_process")
TRACED_FUNCTIONS = HOOK_FUNCTIONS + SHADOW_FUNCTIONS
EXPLAIN_PROGRAM = "bpfoom_explain"
SHADOW_SUFFIX = "-shadow"           # pins of a policy in shadow mode: PIN_ROOT/<hash>-shadow (bpffs refuses dots)
ATTACH_TYPES = {24: "trace_fentry", 25: "trace_fexit", 26: "modify_return"}
BTF_KIND_FUNC = 12
BPF_FS_MAGIC = 0xCAFE4A11
LIBBPF_MIN = (1, 0)

# Entries this agent writes to the journal, one MESSAGE_ID per kind: journalctl MESSAGE_ID=... finds them.
MESSAGE_IDS = {
    "selection": "3f9d5c1e8a2b4f6d9e0c7a1b2d3e4f50",     # the policy selected a task (it replaced oc->chosen)
    "pins_moved": "7a4e2c9b1d8f4e3a8b6c5d4e3f2a1b09",    # bpffs was unmounted under the policy; pins moved
    "shadow": "ae88e7a08fc5414d9acc8d0ab4a2b9a4",        # a shadow policy's verdict on one OOM
    "inputs": "c0b5a3e1d7f24e8b9a6c2d1e0f3b4a57",        # what the policy's host inputs resolve to changed
}


# --- the structures shared with the kernel and with the policy -------------
# What the policy's BPF C declares (templates/bpf/include/bpfoom_core.h) and what the kernel's UAPI
# declares (linux/bpf.h), as types: read by field, never at byte offsets. tests/compile checks the
# first three against a compiled policy (tests/compile/test_shared_types.py).

BPFOOM_POLICY_NAME_LEN = 16
BPFOOM_COMM_LEN = 16


class Identity(ctypes.Structure):
    """struct bpfoom_identity: the policy's name and hash, in its .rodata.id map."""
    _fields_ = [("name", ctypes.c_char * BPFOOM_POLICY_NAME_LEN), ("hash", ctypes.c_char * 65)]


class Counters(ctypes.Structure):
    """struct bpfoom_counters, in the policy's .data.counters map."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "evaluations", "selections", "ooms",
        "shadow_agree", "shadow_disagree", "shadow_no_victim", "shadow_not_comparable")]


class Basis(ctypes.Structure):
    """struct bpfoom_basis: what a task's rank rested on (the matchers that decided, its uid, the named cgroup)."""
    _fields_ = [("matched", ctypes.c_uint32), ("uid", ctypes.c_uint32), ("cgroup_id", ctypes.c_uint64),
                ("cgroup_owner", ctypes.c_uint32), ("cgroup_vouched", ctypes.c_uint32)]


# enum bpfoom_matcher: the bits of Basis.matched, and whether the task could have chosen that identity itself.
MATCHED = ((1, "comm", "chosen by the process"), (2, "cgroup", None), (4, "uid", "vouched for by the kernel"),
           (8, "target", "vouched for by the host (PID and start time)"))


class Unit(ctypes.Structure):
    """struct bpfoom_unit: the value of a units map (a unit or slice name the agent resolved)."""
    _fields_ = [("value", ctypes.c_int32), ("_pad", ctypes.c_uint32)]


class Event(ctypes.Structure):
    """struct bpfoom_event: one per task the policy selected, from its bpfoom_events ring buffer."""
    _fields_ = [("pid", ctypes.c_uint32), ("displaced_pid", ctypes.c_uint32),
                ("rank", ctypes.c_int32), ("displaced_rank", ctypes.c_int32),
                ("cgroup_id", ctypes.c_uint64), ("basis", Basis),
                ("comm", ctypes.c_char * BPFOOM_COMM_LEN), ("displaced_comm", ctypes.c_char * BPFOOM_COMM_LEN)]


class ShadowRecord(ctypes.Structure):
    """struct bpfoom_shadow_record: one per OOM a shadow policy saw, from its bpfoom_shadow_events ring buffer."""
    _fields_ = [("outcome", ctypes.c_uint32), ("memcg", ctypes.c_uint32), ("candidates", ctypes.c_uint32),
                ("policy_pid", ctypes.c_uint32), ("policy_rank", ctypes.c_int32), ("kernel_pid", ctypes.c_uint32),
                ("policy_cgroup_id", ctypes.c_uint64), ("kernel_cgroup_id", ctypes.c_uint64),
                ("policy_comm", ctypes.c_char * BPFOOM_COMM_LEN), ("kernel_comm", ctypes.c_char * BPFOOM_COMM_LEN),
                ("policy_basis", Basis)]


# enum bpfoom_shadow_outcome: the metric's outcome label, and what the journal entry says.
SHADOW_OUTCOMES = {1: ("agree", None), 2: ("disagree", None), 3: ("no_victim", None),
                   4: ("not_comparable", "the kernel took a task marked to die first (oom_task_origin)"),
                   5: ("not_comparable", "the scan stopped: an earlier victim is still dying"),
                   6: ("not_comparable", "the kernel chose without a scan (oom_kill_allocating_task, "
                                         "or the allocating task was exiting)")}


class Candidate(ctypes.Structure):
    """struct bpfoom_candidate: one task as the policy's iter/task program (explain) ranks it."""
    _fields_ = [("pid", ctypes.c_uint32), ("rank", ctypes.c_int32), ("oom_score_adj", ctypes.c_int32),
                ("_pad", ctypes.c_uint32), ("cgroup_id", ctypes.c_uint64), ("start_time", ctypes.c_uint64),
                ("comm", ctypes.c_char * BPFOOM_COMM_LEN), ("basis", Basis)]


class LinkInfo(ctypes.Structure):
    """struct bpf_link_info, up to its tracing member (the kernel fills what fits)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32),             # the union after it is 8-byte aligned
                ("attach_type", ctypes.c_uint32), ("target_obj_id", ctypes.c_uint32),
                ("target_btf_id", ctypes.c_uint32)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info, up to name."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
                ("name", ctypes.c_char * 16)]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info, up to name."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


BPF_LINK_TYPE_TRACING = 2


def _text(raw):
    return raw.decode(errors="replace")


class Failure(Exception):
    """A failure with an exit code and a message saying what to do."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# --- libbpf through ctypes -------------------------------------------------

def _load_libbpf():
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        raise Failure(7, "libbpf.so.1 not found: install libbpf1 (apt-get install libbpf1)") from None
    vp, cp, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32
    for name, restype, argtypes in (
        ("libbpf_major_version", u32, []), ("libbpf_minor_version", u32, []),
        ("libbpf_set_print", vp, [vp]),
        ("bpf_object__open_file", vp, [cp, vp]), ("bpf_object__load", ctypes.c_int, [vp]),
        ("bpf_object__close", None, [vp]),
        ("bpf_object__next_program", vp, [vp, vp]), ("bpf_program__name", cp, [vp]),
        ("bpf_object__find_program_by_name", vp, [vp, cp]),
        ("bpf_program__set_autoload", ctypes.c_int, [vp, ctypes.c_bool]),
        ("bpf_program__attach", vp, [vp]), ("bpf_link__pin", ctypes.c_int, [vp, cp]),
        ("bpf_program__attach_iter", vp, [vp, vp]), ("bpf_link__fd", ctypes.c_int, [vp]),
        ("bpf_link__destroy", ctypes.c_int, [vp]), ("bpf_iter_create", ctypes.c_int, [ctypes.c_int]),
        ("bpf_object__find_map_by_name", vp, [vp, cp]), ("bpf_map__fd", ctypes.c_int, [vp]),
        ("bpf_map__pin", ctypes.c_int, [vp, cp]),
        ("bpf_map_update_elem", ctypes.c_int, [ctypes.c_int, vp, vp, ctypes.c_uint64]),
        ("bpf_map_lookup_elem", ctypes.c_int, [ctypes.c_int, vp, vp]),
        ("bpf_map_delete_elem", ctypes.c_int, [ctypes.c_int, vp]),
        ("bpf_map_get_next_key", ctypes.c_int, [ctypes.c_int, vp, vp]),
        ("bpf_obj_get", ctypes.c_int, [cp]), ("bpf_obj_pin", ctypes.c_int, [ctypes.c_int, cp]),
        ("bpf_obj_get_info_by_fd", ctypes.c_int, [ctypes.c_int, vp, ctypes.POINTER(u32)]),
        ("bpf_link_get_next_id", ctypes.c_int, [u32, ctypes.POINTER(u32)]),
        ("bpf_link_get_fd_by_id", ctypes.c_int, [u32]),
        ("bpf_prog_get_fd_by_id", ctypes.c_int, [u32]),
        ("bpf_map_get_fd_by_id", ctypes.c_int, [u32]),
        ("btf__load_vmlinux_btf", vp, []),
        ("btf__find_by_name_kind", ctypes.c_int, [vp, cp, ctypes.c_uint]),
        ("btf__type_by_id", ctypes.POINTER(u32), [vp, ctypes.c_uint]),
        ("btf__name_by_offset", cp, [vp, ctypes.c_uint]),
        ("ring_buffer__new", vp, [ctypes.c_int, vp, vp, vp]),
        ("ring_buffer__poll", ctypes.c_int, [vp, ctypes.c_int]),
        ("ring_buffer__free", None, [vp]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


LIBBPF = None
LIBBPF_LOG = []
# libbpf's print callback: (level, format, va_list); vsnprintf formats it.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LIBC = ctypes.CDLL(None)
_LIBC.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


@_PRINT_FN
def _collect_libbpf_output(level, fmt, args):
    if level > 1:                   # LIBBPF_DEBUG: hundreds of lines per load, never shown
        return 0
    buffer = ctypes.create_string_buffer(4096)
    _LIBC.vsnprintf(buffer, len(buffer), fmt, args)
    LIBBPF_LOG.append(buffer.value.decode(errors="replace"))
    return 0


def libbpf():
    global LIBBPF
    if LIBBPF is None:
        LIBBPF = _load_libbpf()
        LIBBPF.libbpf_set_print(ctypes.cast(_collect_libbpf_output, ctypes.c_void_p))
    return LIBBPF


def _errno_text():
    return os.strerror(ctypes.get_errno() or errno.EINVAL)


def _info(fd, info_type):
    """bpf_obj_get_info_by_fd into a zeroed info_type (LinkInfo, ProgInfo, MapInfo), or None."""
    info = info_type()
    length = ctypes.c_uint32(ctypes.sizeof(info))
    if libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
        return None
    return info


def _object_id(fd, info_type):
    info = _info(fd, info_type)
    if info is None:
        raise Failure(1, f"reading BPF object info failed: {_errno_text()}")
    return info.id


# --- what the kernel holds -------------------------------------------------

_VMLINUX_BTF = []


def vmlinux_btf():
    """The kernel's BTF, parsed once per run (it is megabytes)."""
    if not _VMLINUX_BTF:
        _VMLINUX_BTF.append(libbpf().btf__load_vmlinux_btf())
    return _VMLINUX_BTF[0]


def missing_functions(names):
    """Those of names the kernel's BTF does not have as functions (so nothing can attach to them)."""
    btf = vmlinux_btf()
    if not btf:
        return list(names)
    return [name for name in names if libbpf().btf__find_by_name_kind(btf, name.encode(), BTF_KIND_FUNC) < 0]


def missing_hook_functions():
    return missing_functions(HOOK_FUNCTIONS)


def missing_for_mode(mode):
    """What this kernel lacks to run a policy in mode, as a sentence, or None."""
    if mode == "enforce":
        missing = missing_hook_functions()
        return missing and (f"this kernel ({os.uname().release}) has no BPF OOM hook: {', '.join(missing)} "
                            "not in its BTF; boot a kernel carrying the bpf_oom_evaluate_task series, "
                            "or run the policy in shadow mode")
    missing = missing_functions(SHADOW_FUNCTIONS)
    return missing and (f"this kernel ({os.uname().release}) cannot run a shadow policy: {', '.join(missing)} "
                        "not in its BTF (inlined or built without CONFIG_DEBUG_INFO_BTF), so nothing can "
                        "observe its OOMs there")


def bpffs_mounted():
    with open("/proc/self/mounts") as mounts:      # (ProcSubset=pid hides /proc/mounts)
        return any(line.split()[1:3] == [BPFFS, "bpf"] for line in mounts)


def libbpf_version():
    return (libbpf().libbpf_major_version(), libbpf().libbpf_minor_version())


def link_info(fd, btf):
    """type, ids and, for tracing links, the attach type and the target function's name."""
    info = _info(fd, LinkInfo)
    if info is None:
        raise Failure(1, f"reading BPF link info failed: {_errno_text()}")
    target = None
    if info.type == BPF_LINK_TYPE_TRACING and info.target_btf_id:
        btf_type = libbpf().btf__type_by_id(btf, info.target_btf_id)
        if btf_type:
            name = libbpf().btf__name_by_offset(btf, btf_type[0])     # struct btf_type: name_off first
            target = name.decode() if name else None
    return {"link_id": info.id, "prog_id": info.prog_id,
            "attach_type": ATTACH_TYPES.get(info.attach_type, str(info.attach_type)), "target": target}


def _read_map_value(map_fd, map_info, value_type):
    """The single value (key 0) of an array map, as value_type, or None (also when the sizes differ)."""
    if map_info.value_size != ctypes.sizeof(value_type):
        return None
    key, value = ctypes.c_uint32(0), value_type()
    if libbpf().bpf_map_lookup_elem(map_fd, ctypes.byref(key), ctypes.byref(value)) != 0:
        return None
    return value


def program_info(prog_id):
    """Tag, name, and the policy identity and counters from the program's own maps."""
    fd = libbpf().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return {"prog_id": prog_id, "error": _errno_text()}
    try:
        map_ids = (ctypes.c_uint32 * 16)()
        info = ProgInfo(nr_map_ids=len(map_ids), map_ids=ctypes.addressof(map_ids))
        length = ctypes.c_uint32(ctypes.sizeof(info))
        if libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
            return {"prog_id": prog_id, "error": _errno_text()}
        result = {"prog_id": prog_id, "tag": bytes(info.tag).hex(), "prog_name": _text(info.name)}
        for map_id in map_ids[:min(info.nr_map_ids, len(map_ids))]:
            map_fd = libbpf().bpf_map_get_fd_by_id(map_id)
            if map_fd < 0:
                continue
            try:
                map_info = _info(map_fd, MapInfo)
                map_name = _text(map_info.name) if map_info else None
                if map_name == ".rodata.id":
                    identity = _read_map_value(map_fd, map_info, Identity)
                    if identity:
                        result.update(policy_name=_text(identity.name), policy_hash=_text(identity.hash))
                elif map_name == ".data.counters":
                    counters = _read_map_value(map_fd, map_info, Counters)
                    if counters:
                        result.update((name, getattr(counters, name)) for name, _type in Counters._fields_)
            finally:
                os.close(map_fd)
        return result
    finally:
        os.close(fd)


def hook_links(btf, known=frozenset()):
    """Every link attached to the hook, ours or not, and every bpfoom program's link on the functions shadow
    mode observes, from the kernel's list of links: (link, its program's info) pairs. Links in `known`
    (the agent's pinned ones, already read through their pins) are left out, so no program is read twice."""
    links, next_id = [], ctypes.c_uint32(0)
    while libbpf().bpf_link_get_next_id(next_id.value, ctypes.byref(next_id)) == 0:
        if next_id.value in known:
            continue
        fd = libbpf().bpf_link_get_fd_by_id(next_id.value)
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


def pin_key(policy_hash, mode):
    """Where a policy in a mode is pinned (PIN_ROOT/<key>), and what the state files name: its hash, with
    SHADOW_SUFFIX in shadow mode. The same policy in both modes is two keys: a switch is make-before-break."""
    return policy_hash + (SHADOW_SUFFIX if mode == "shadow" else "")


def split_key(key):
    """(policy hash, mode) of a pin key."""
    if key.endswith(SHADOW_SUFFIX):
        return key[:-len(SHADOW_SUFFIX)], "shadow"
    return key, "enforce"


def pinned_policies():
    """The pin keys of the policies this agent pinned."""
    return sorted(os.listdir(PIN_ROOT)) if os.path.isdir(PIN_ROOT) else []


def desired_problem():
    """Why the agent could not re-apply the desired policy from its store (at boot, on reload), or None."""
    desired = _read(DESIRED_FILE)
    if not desired:
        return None
    try:
        stored_manifest(desired)
    except Failure as failure:
        return str(failure)
    return None


def status():
    missing, missing_shadow = missing_hook_functions(), missing_functions(SHADOW_FUNCTIONS)
    desired = _read(DESIRED_FILE)
    report = {
        "kernel_release": os.uname().release,
        "hook": not missing,
        "hook_functions": {name: name not in missing for name in HOOK_FUNCTIONS},
        "bpffs": bpffs_mounted(),
        "libbpf_version": "%d.%d" % libbpf_version(),
        "desired_hash": split_key(desired)[0] if desired else None,
        "desired_mode": split_key(desired)[1] if desired else None,
        "shadow_functions": {name: name not in missing_shadow for name in SHADOW_FUNCTIONS},
        "desired_problem": desired_problem(),
        "last_known_good": _good_list(),
        "rollback_target": rollback_target(),
        "attached_policy": None,
        "policies": [],
        "host_inputs": [],
        "input_problems": [],
    }
    btf = vmlinux_btf()
    if not btf:
        return report                       # no BTF: nothing can be attached, by the agent or anyone
    managed = managed_status()
    ours = {link["link_id"] for policy in managed["policies"] for link in policy["links"]}
    # Links on the hook that are not pinned where this agent pins: the desired policy while bpffs is
    # unmounted (the running agent keeps it: see guard_pins), or another tool's policy; shown as the kernel has it.
    unpinned = {}
    for link, prog in hook_links(btf, known=ours):
        mode = "enforce" if link["target"] in HOOK_FUNCTIONS else "shadow"
        managed_here = (prog.get("policy_hash"), mode) == (report["desired_hash"], report["desired_mode"])
        entry = unpinned.setdefault((prog.get("policy_hash"), mode, managed_here or link["link_id"]), {
            "policy_name": prog.get("policy_name"), "policy_hash": prog.get("policy_hash"), "mode": mode,
            "managed": managed_here, "pinned": False, "attached": True, "links": []})
        entry["links"].append(dict(link, tag=prog.get("tag")))
    attached = managed["attached_policy"] or next(
        ({"policy_name": p["policy_name"], "policy_hash": p["policy_hash"], "mode": p["mode"]}
         for p in unpinned.values() if p["managed"]), None)
    report.update(attached_policy=attached, policies=managed["policies"] + list(unpinned.values()))
    # What the running policy's names and targets resolve to here: a policy that selects nobody, or names a
    # unit this host does not have, is a state to see, not a note at apply time.
    inputs = held_inputs(desired) if desired and managed["attached_policy"] else []
    report.update(host_inputs=inputs, input_problems=input_problems(inputs))
    return report


# --- applying --------------------------------------------------------------

def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def replace_file(path, text, mode=0o600, durable=True):
    """Replace a file whole (a temporary file beside it, then a rename): a reader never sees half of it,
    and a failed write (a full disk) leaves the old content and no temporary file."""
    try:
        with open(path + ".tmp", "w") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(path + ".tmp", mode)
        os.replace(path + ".tmp", path)
    except OSError as error:
        if os.path.exists(path + ".tmp"):
            os.unlink(path + ".tmp")
        raise OSError(error.errno, error.strerror, error.filename or path) from error


def _write(path, text):
    """A state file: what boot re-applies, the last known good policies."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    replace_file(path, text + "\n")


def _good_list():
    text = _read(GOOD_FILE)
    return text.split() if text else []


def _check_safe(path, what="load a policy others could have replaced"):
    """Refuse a file or directory that others could have written (up to /; a symbolic link's own mode means
    nothing, its target is checked as well)."""
    current = os.path.abspath(path)
    while True:
        info = os.lstat(current)
        if info.st_mode & 0o002 and not stat.S_ISLNK(info.st_mode):
            raise Failure(6, f"{current} is world-writable: refusing to {what} (fix with chmod o-w {current})")
        if info.st_uid != 0 and current != "/":
            raise Failure(6, f"{current} is not owned by root: refusing to {what}")
        if current == "/":
            break
        current = os.path.dirname(current)
    if os.path.realpath(path) != os.path.abspath(path):
        _check_safe(os.path.realpath(path), what)


def read_manifest(policy_dir):
    obj, manifest_path = os.path.join(policy_dir, "policy.bpf.o"), os.path.join(policy_dir, "manifest.json")
    for path in (obj, manifest_path):
        if not os.path.isfile(path):
            raise Failure(1, f"{path} is missing: copy the policy built by bpfoom.fleet.policy_build")
        _check_safe(path)
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    try:
        from _sha256 import sha256  # the built-in module: no OpenSSL to load at start-up
    except ImportError:
        from hashlib import sha256
    with open(obj, "rb") as handle:
        actual = sha256(handle.read()).hexdigest()
    if actual != manifest.get("object_sha256"):
        raise Failure(5, f"{obj} has sha256 {actual}, its manifest says {manifest.get('object_sha256')}: "
                         "refusing it; rebuild and copy the policy again")
    return manifest


def preflight(mode):
    missing = missing_for_mode(mode)
    if missing:
        raise Failure(3, missing)
    if not bpffs_mounted():
        raise Failure(7, f"bpffs is not mounted on {BPFFS}: mount it (mount -t bpf bpf {BPFFS}) "
                         "or let systemd do it (sys-fs-bpf.mount)")
    if libbpf_version() < LIBBPF_MIN:
        raise Failure(7, "libbpf %d.%d is too old: bpfoomctl needs libbpf 1.0 or newer (libbpf1)" % libbpf_version())


# --- host inputs: what a policy resolves on this host -------------------------
# A manifest's host_inputs (policy_catalog.Template.host_inputs) name maps of the object to fill here,
# when the policy is applied and again while it runs (the events loop), because what they resolve to
# changes: a unit restarts with a new PID, a pidfile is rewritten, a unit appears or goes.
#   {"map": M, "pid_of": {"unit": U} | {"pidfile": F}}  key: the PID (u32), value: its start time (u64, the
#       starttime of /proc/PID/stat): the policy selects that process only while the PID is still its own.
#   {"map": M, "units": [{"name": N, "value": V}, ...]}  key: cgroup_name_hash() of the unit N resolves to
#       (an alias to its unit: sshd.service is ssh.service on Debian), value: struct bpfoom_unit.

REFRESH_EVERY_S = 30                # units and unit targets are asked of systemd again this often
NO_UNIT_STATES = ("not-found", "bad-setting", "error")     # a LoadState that means: no such unit here


def cgroup_name_hash(name):
    """FNV-1a 64 over a cgroup name's first 63 bytes zero-padded to 64: kernfs_name_hash() in bpfoom_match.h."""
    value = 0xcbf29ce484222325
    for byte in name.encode()[:63].ljust(64, b"\0"):
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value


def _systemctl_show(names, properties):
    """[{property: value}] of each unit name, in order, from one systemctl call; None without systemd."""
    import subprocess  # only policies with host inputs need it: keep it off every other command's start-up
    try:
        result = subprocess.run(["systemctl", "show", "--property", ",".join(properties), "--", *names],
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
    shown = _systemctl_show(names, ("Id", "LoadState"))
    if shown is None:
        return {name: name for name in names}
    return {name: (unit.get("Id") or name) if unit.get("LoadState") not in NO_UNIT_STATES else None
            for name, unit in zip(names, shown)}


def start_ticks(pid):
    """The starttime of /proc/PID/stat (clock ticks since boot), or None when no such process runs."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return int(fields[19])          # field 22; fields[0] is field 3 (the state)
    except (OSError, ValueError, IndexError):
        return None


def resolve_target(pid_of):
    """(PID, start ticks, None) of a unit's main process or a pidfile's, or (None, None, why it selects nobody)."""
    if "unit" in pid_of:
        shown = _systemctl_show([pid_of["unit"]], ("MainPID", "LoadState"))
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
            _check_safe(path, "trust a PID others could have written (they would choose the victim)")
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
               bytes(Unit(value=unit["value"])) for unit in host_input["units"]}
    these = "these names" if len(missing) > 1 else "this name"
    report = {"map": host_input["map"], "units": {name: resolved[name] for name in names},
              "problem": f"{', '.join(missing)}: no such unit on this host, so the policy matches nothing by {these}"
              if missing else None}
    return entries, report


def map_entries(fd, key_size, value_size):
    """{key bytes: value bytes} of a BPF hash map."""
    entries, key, next_key = {}, None, ctypes.create_string_buffer(key_size)
    value = ctypes.create_string_buffer(value_size)
    while libbpf().bpf_map_get_next_key(fd, key, next_key) == 0:
        key = ctypes.create_string_buffer(next_key.raw, key_size)
        if libbpf().bpf_map_lookup_elem(fd, key, value) == 0:
            entries[key.raw] = value.raw
    return entries


def sync_map(fd, wanted, key_size, value_size):
    """Make a hash map hold exactly `wanted`: new entries first, then the stale ones go. True if it changed."""
    held = map_entries(fd, key_size, value_size)
    for key, value in wanted.items():
        if held.get(key) != value and libbpf().bpf_map_update_elem(fd, key, value, 0) != 0:
            raise Failure(1, f"cannot write a host input into its map: {_errno_text()}")
    for key in set(held) - set(wanted):
        libbpf().bpf_map_delete_elem(fd, key)
    return held != wanted


def input_sizes(host_input):
    return (4, 8) if "pid_of" in host_input else (8, ctypes.sizeof(Unit))


def fill_host_inputs(map_fd_of, manifest):
    """Fill each host input's map (map_fd_of(name) gives its fd); return the reports. Generic: no template is
    known here."""
    reports = []
    for host_input in manifest.get("host_inputs", []):
        fd = map_fd_of(host_input["map"])
        if fd < 0:
            raise Failure(1, f"policy {manifest['name']!r} has no map {host_input['map']}: it was built by another "
                             "bpfoom.fleet; build and roll it out again")
        wanted, report = wanted_entries(host_input)
        report["changed"] = sync_map(fd, wanted, *input_sizes(host_input))
        reports.append(report)
    return reports


def input_notes(reports):
    """One line per host input, for apply's notes."""
    notes = []
    for report in reports:
        if "target" in report:
            notes.append(report["problem"] or f"{report['target']}: PID {report['pid']}")
        else:
            aliases = [f"{name} is {unit}" for name, unit in report["units"].items() if unit and unit != name]
            notes += [report["problem"]] if report["problem"] else []
            notes += [f"{report['map']}: {', '.join(aliases)}"] if aliases else []
    return notes


def input_problems(reports):
    return [report["problem"] for report in reports if report["problem"]]


def input_name(report):
    """What a host input names: its target, or its units."""
    return report.get("target") or ", ".join(report["units"])


def input_pin(pin_dir, map_name):
    return os.path.join(pin_dir, "input-" + map_name)


def pinned_input_fd(key, map_name):
    """An fd of the pinned map of a host input of the policy pinned under key, or -1."""
    return libbpf().bpf_obj_get(input_pin(os.path.join(PIN_ROOT, key), map_name).encode())


def stored_manifest(key):
    return read_manifest(policy_dir_of(split_key(key)[0]))


def refresh_host_inputs(key, manifest):
    """The pinned policy's host inputs made current, through their pins; the reports."""
    fds = []

    def map_fd_of(name):
        fds.append(pinned_input_fd(key, name))
        return fds[-1]
    try:
        return fill_host_inputs(map_fd_of, manifest)
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def held_inputs(key):
    """What the running policy's host input maps hold now and what they should (status; changes nothing)."""
    try:
        manifest = stored_manifest(key)
    except Failure:
        return []
    reports = []
    for host_input in manifest.get("host_inputs", []):
        wanted, report = wanted_entries(host_input)
        fd = pinned_input_fd(key, host_input["map"])
        if fd < 0:
            report["current"] = None
        else:
            report["current"] = map_entries(fd, *input_sizes(host_input)) == wanted
            os.close(fd)
        if report["current"] is False and not report["problem"]:
            report["problem"] = f"{host_input['map']} is not current (the agent refreshes it every 2 s while it runs)"
        reports.append(report)
    return reports


def _verifier_tail(lines=25):
    text = "".join(LIBBPF_LOG).splitlines()
    return "\n".join(text[-lines:])


def _object_map_fd(obj, name):
    map_ptr = libbpf().bpf_object__find_map_by_name(obj, name.encode())
    return libbpf().bpf_map__fd(map_ptr) if map_ptr else -1


def open_policy(policy_dir, manifest, programs):
    """Open and load the policy's object with only the named programs (the rest are not even verified), and
    fill its host inputs. Returns (object, host input reports); the caller closes the object."""
    lib = libbpf()
    del LIBBPF_LOG[:]
    obj = lib.bpf_object__open_file(os.path.join(policy_dir, "policy.bpf.o").encode(), None)
    if not obj:
        raise Failure(1, f"libbpf cannot open {policy_dir}/policy.bpf.o: {_errno_text()}\n{_verifier_tail()}")
    try:
        found, prog = set(), lib.bpf_object__next_program(obj, None)
        while prog:
            name = lib.bpf_program__name(prog).decode()
            found.add(name)
            lib.bpf_program__set_autoload(prog, name in programs)
            prog = lib.bpf_object__next_program(obj, prog)
        if set(programs) - found:
            raise Failure(1, f"policy {manifest['name']!r} has no program {', '.join(sorted(set(programs) - found))}: "
                             "it was built by an older bpfoom.fleet; build and roll it out again")
        if lib.bpf_object__load(obj) != 0:
            raise Failure(4, f"the kernel's verifier rejected policy {manifest['name']!r} "
                             f"({_errno_text()}); last lines of its log:\n{_verifier_tail()}")
        return obj, fill_host_inputs(lambda name: _object_map_fd(obj, name), manifest)
    except BaseException:
        lib.bpf_object__close(obj)
        raise


def load_and_pin(policy_dir, manifest, pin_dir, mode):
    """Load the programs of mode, attach them and pin their links and their ring buffer in pin_dir."""
    lib = libbpf()
    obj, inputs = open_policy(policy_dir, manifest, MODES[mode])
    try:
        os.makedirs(pin_dir, mode=0o700)
        for host_input in manifest.get("host_inputs", []):     # pinned, so the events loop keeps them current
            map_ptr = lib.bpf_object__find_map_by_name(obj, host_input["map"].encode())
            if lib.bpf_map__pin(map_ptr, input_pin(pin_dir, host_input["map"]).encode()) != 0:
                raise Failure(1, f"pinning map {host_input['map']} in {pin_dir} failed: {_errno_text()}")
        for name, (role, _attach_type, _target) in MODES[mode].items():
            link = lib.bpf_program__attach(lib.bpf_object__find_program_by_name(obj, name.encode()))
            if not link:
                raise Failure(1, f"attaching {name} failed: {_errno_text()}\n{_verifier_tail()}")
            if lib.bpf_link__pin(link, os.path.join(pin_dir, role).encode()) != 0:
                raise Failure(1, f"pinning {name} in {pin_dir} failed: {_errno_text()}")
        events = lib.bpf_object__find_map_by_name(obj, MODE_EVENTS[mode].encode())
        if not events or lib.bpf_map__pin(events, os.path.join(pin_dir, "events").encode()) != 0:
            raise Failure(1, f"pinning the events map failed: {_errno_text()}")
    finally:
        # Pinned links stay attached; closing the object drops only this process's references.
        lib.bpf_object__close(obj)
    return inputs


def remove_flat_dir(path):
    """Remove a directory of plain entries (a policy's pins, a stored copy), if it is there."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


unpin = remove_flat_dir                    # unpinning a policy's links and maps detaches them


def pinned_view(key):
    """One pinned policy as the kernel holds it: its links and the identity in its programs' maps."""
    btf, (_hash, mode) = vmlinux_btf(), split_key(key)
    links = {}
    for role, attach_type, target in MODES[mode].values():
        fd = libbpf().bpf_obj_get(os.path.join(PIN_ROOT, key, role).encode())
        if fd >= 0:
            links[role] = link_info(fd, btf)
            os.close(fd)
    identity = {}                           # a program holds only the maps it uses: the counters are in some
    for link in links.values():             # of them, so every program of the policy is read
        identity.update((key, value) for key, value in program_info(link["prog_id"]).items()
                        if identity.get(key) is None)
    view = {"policy_name": identity.get("policy_name"), "policy_hash": identity.get("policy_hash"), "mode": mode,
            "managed": True, "pinned": True, "links": [dict(link, tag=identity.get("tag")) for link in links.values()],
            "attached": all(role in links and (links[role]["attach_type"], links[role]["target"]) == (attach_type, target)
                            for role, attach_type, target in MODES[mode].values())}
    view.update((name, identity.get(name)) for name, _type in Counters._fields_)
    return view


def identity_of(view):
    return {"policy_name": view["policy_name"], "policy_hash": view["policy_hash"], "mode": view["mode"]}


def managed_status():
    """The agent's own policies, read from the kernel through their pins (cheaper than status())."""
    views = [pinned_view(key) for key in pinned_policies()]
    attached = [view for view in views if view["attached"]]
    return {"attached_policy": identity_of(attached[-1]) if attached else None, "policies": views}


def verify(key, manifest):
    """The kernel holds every link of this policy's mode, on the right functions, with the right name and hash."""
    view, (policy_hash, mode) = pinned_view(key), split_key(key)
    if not view["attached"]:
        raise Failure(1, f"policy {manifest['name']} ({mode}) is only partly attached: "
                         f"{[l['target'] for l in view['links']]}")
    if (view["policy_name"], view["policy_hash"]) != (manifest["name"], policy_hash):
        raise Failure(1, f"the kernel reports {view['policy_name']!r} ({view['policy_hash']}), "
                         f"expected {manifest['name']!r} ({policy_hash})")
    return view


class Lock:
    """One apply, detach or rollback at a time on this host."""

    def __enter__(self):
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        self.handle = open(LOCK_FILE, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def store(policy_dir, manifest):
    """Keep the policy in the agent's store (by hash): boot and rollback re-apply it from there."""
    target = policy_dir_of(manifest["hash"])
    if os.path.abspath(policy_dir) == target:
        return target
    os.makedirs(POLICY_STORE, mode=0o700, exist_ok=True)
    staging = target + ".new"
    remove_flat_dir(staging)
    try:
        os.makedirs(staging, mode=0o700)
        for name in ("policy.bpf.o", "manifest.json"):
            with open(os.path.join(policy_dir, name), "rb") as source, \
                    open(os.path.join(staging, name), "wb") as copy:
                copy.write(source.read())
                copy.flush()
                os.fsync(copy.fileno())
    except OSError as error:
        remove_flat_dir(staging)           # no half-written copy stays
        raise OSError(error.errno, error.strerror, error.filename or staging) from error
    remove_flat_dir(target)
    os.rename(staging, target)
    return target


def apply(policy_dir, mode="enforce"):
    manifest = read_manifest(policy_dir)
    policy_hash = manifest["hash"]
    key = pin_key(policy_hash, mode)
    with Lock():
        preflight(mode)
        policy_dir = store(policy_dir, manifest)
        attached = managed_status()["attached_policy"]
        if attached and pin_key(attached["policy_hash"], attached["mode"]) == key:
            _write(DESIRED_FILE, key)
            others = [other for other in pinned_policies() if other != key]
            for other in others:           # leftovers of an interrupted swap
                unpin(os.path.join(PIN_ROOT, other))
            inputs = refresh_host_inputs(key, manifest)
            return {"changed": bool(others) or any(report["changed"] for report in inputs),
                    "policy_name": manifest["name"], "policy_hash": policy_hash, "mode": mode, "previous": attached,
                    "notes": ["already attached"] + input_notes(inputs), "host_inputs": inputs,
                    "input_problems": input_problems(inputs), "status": managed_status()}
        os.makedirs(PIN_ROOT, mode=0o700, exist_ok=True)
        pin_dir = os.path.join(PIN_ROOT, key)
        unpin(pin_dir)                     # a half-pinned leftover of this same policy
        try:
            inputs = load_and_pin(policy_dir, manifest, pin_dir, mode)
            verify(key, manifest)
        except BaseException:
            unpin(pin_dir)                 # nothing half-applied: the previous policy still runs
            raise
        # What boot re-applies is written before the old policy goes: a failed write (a full disk)
        # detaches the new one and leaves the host as it was; a crash in between leaves both attached,
        # and the newest decides.
        try:
            good = [other for other in _good_list() if other != key] + [key]
            _write(GOOD_FILE, " ".join(good[-5:]))
            _write(DESIRED_FILE, key)
        except OSError:
            unpin(pin_dir)
            raise
        # Make-before-break: only now, with the new policy attached and verified, the old one goes.
        # (BPFOOM_OVERLAP_HOLD_S holds both attached a while: the lab test that proves it samples here.)
        time.sleep(float(os.environ.get("BPFOOM_OVERLAP_HOLD_S", "0")))
        others = [other for other in pinned_policies() if other != key]
        for other in others:
            unpin(os.path.join(PIN_ROOT, other))
        return {"changed": True, "policy_name": manifest["name"], "policy_hash": policy_hash, "mode": mode,
                "previous": attached, "notes": input_notes(inputs), "host_inputs": inputs,
                "input_problems": input_problems(inputs), "status": managed_status()}


def detach(forget_desired=True):
    """Detach every policy this agent pinned; an operator's detach also forgets the desired one."""
    with Lock():
        pinned = pinned_policies()
        for policy_hash in pinned:
            unpin(os.path.join(PIN_ROOT, policy_hash))
        if forget_desired and os.path.exists(DESIRED_FILE):
            os.unlink(DESIRED_FILE)
        return {"changed": bool(pinned), "detached": sorted(pinned), "status": managed_status()}


def stop():
    """ExecStop of bpfoom.service: detach only when someone asked the agent to stop.

    systemd also runs ExecStop after the agent crashed (SERVICE_RESULT is then
    not "success"), and a restart is a stop then a start: in both cases the
    policy stays attached and the next start adopts it.
    """
    service_result = os.environ.get("SERVICE_RESULT", "success")
    if service_result != "success":
        return {"changed": False, "notes": [f"agent ended with {service_result}: the policy stays attached"]}
    import subprocess  # only the unit's stop needs it
    jobs = subprocess.run(["systemctl", "list-jobs", "--no-legend", "--plain"], capture_output=True,
                          text=True, check=False).stdout.split("\n")
    if any(line.split()[1:3] in (["bpfoom.service", "restart"], ["bpfoom.service", "try-restart"])
           for line in jobs if len(line.split()) >= 3):
        return {"changed": False, "notes": ["agent restarting: the policy stays attached"]}
    return detach(forget_desired=False)         # the next start (or boot) re-applies it


def policy_dir_of(policy_hash):
    return os.path.join(POLICY_STORE, policy_hash)


def rollback_target():
    """The newest policy (in its mode) that verified here before the desired one and is still stored, or None."""
    current = _read(DESIRED_FILE)
    for key in reversed(_good_list()):
        policy_hash, mode = split_key(key)
        if key != current and os.path.isdir(policy_dir_of(policy_hash)):
            # The name only: a damaged copy is still the target, and apply refuses it naming its file.
            try:
                with open(os.path.join(policy_dir_of(policy_hash), "manifest.json")) as handle:
                    name = json.load(handle)["name"]
            except (OSError, ValueError, KeyError):
                continue
            return {"policy_name": name, "policy_hash": policy_hash, "mode": mode}
    return None


def rollback():
    target = rollback_target()
    if not target:
        raise Failure(1, "no earlier policy that verified on this host: nothing to roll back to "
                         "(use detach for the kernel's default)")
    return apply(policy_dir_of(target["policy_hash"]), target["mode"])


def boot():
    """At boot: re-apply the desired policy, or do nothing if none is desired."""
    desired = _read(DESIRED_FILE)
    if not desired:
        return {"changed": False, "notes": ["no policy desired"], "status": managed_status()}
    policy_hash, mode = split_key(desired)
    return apply(policy_dir_of(policy_hash), mode)


# --- explain ---------------------------------------------------------------

BPFOOM_RANK_NEVER = -1
EXPLAIN_TOP = 10


def cgroup_paths(root="/sys/fs/cgroup"):
    """{cgroup id: path} of the cgroup v2 hierarchy (a cgroup's id is its directory's inode number)."""
    paths = {}
    for directory, _subdirs, _files in os.walk(root):
        paths[os.stat(directory).st_ino] = directory[len(root):] or "/"
    return paths


def _oom_score(pid):
    """The kernel's own /proc/PID/oom_score (what it would kill by without a policy), or None once gone."""
    try:
        with open(f"/proc/{pid}/oom_score") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def run_explain(policy_dir, manifest):
    """Every process as the policy's iter/task program ranks it now: a list of Candidate."""
    lib = libbpf()
    obj, _notes = open_policy(policy_dir, manifest, [EXPLAIN_PROGRAM])
    try:
        link = lib.bpf_program__attach_iter(lib.bpf_object__find_program_by_name(obj, EXPLAIN_PROGRAM.encode()), None)
        if not link:
            raise Failure(1, f"creating the task iterator of {manifest['name']!r} failed: {_errno_text()}")
        try:
            fd = lib.bpf_iter_create(lib.bpf_link__fd(link))
            if fd < 0:
                raise Failure(1, f"running the task iterator of {manifest['name']!r} failed: {_errno_text()}")
            with os.fdopen(fd, "rb") as handle:
                data = handle.read()
        finally:
            lib.bpf_link__destroy(link)
    finally:
        lib.bpf_object__close(obj)
    size = ctypes.sizeof(Candidate)
    return [Candidate.from_buffer_copy(data, offset) for offset in range(0, len(data) - size + 1, size)]


def _in_domain(cgroup, memcg):
    """Whether a task of cgroup is a candidate of an OOM of memcg (None: a global OOM)."""
    return not memcg or cgroup == memcg or cgroup.startswith(memcg.rstrip("/") + "/")


def exempt_candidates(candidates, memcg, paths):
    """The tasks no OOM kills whatever the policy says (oom_score_adj -1000, as sshd's listener sets itself), with
    the policy's rank and what it rested on: explain shows them apart, so that "is sshd protected?" has an answer."""
    return [{"pid": c.pid, "comm": _text(c.comm), "cgroup": paths.get(c.cgroup_id, str(c.cgroup_id)),
             "rank": "never" if c.rank == BPFOOM_RANK_NEVER else c.rank, "oom_score_adj": -1000,
             "decided_by": basis_view(c.basis, paths)}
            for c in candidates if c.oom_score_adj == -1000 and _in_domain(paths.get(c.cgroup_id, ""), memcg)]


def rank_candidates(candidates, tie_breaker, memcg=None, paths=None):
    """The tasks an OOM would weigh, each with the policy's rank and the kernel's oom_score, in the policy's
    order (its victim first), and the kernel's own victim. memcg: a cgroup path, for an OOM of that cgroup;
    None for a global OOM. The frame's rules: oom_score_adj -1000 is never a victim; BPFOOM_RANK_NEVER is
    skipped in a memcg OOM and ranks last in a global one."""
    paths = paths if paths is not None else {}
    tasks = []
    for candidate in candidates:
        if candidate.pid == os.getpid():
            continue                        # explain itself: gone before any OOM
        cgroup = paths.get(candidate.cgroup_id, str(candidate.cgroup_id))
        if not _in_domain(cgroup, memcg):
            continue
        oom_score = _oom_score(candidate.pid)
        if oom_score is None or candidate.oom_score_adj == -1000:
            continue
        never = candidate.rank == BPFOOM_RANK_NEVER
        tasks.append({"pid": candidate.pid, "comm": _text(candidate.comm), "cgroup": cgroup,
                      "rank": "never" if never else candidate.rank, "oom_score": oom_score,
                      "decided_by": basis_view(candidate.basis, paths),
                      "_order": (-2 ** 31 if never else candidate.rank, candidate.start_time)})
    tie = {"youngest": lambda t: -t["_order"][1], "oldest": lambda t: t["_order"][1]}.get(
        tie_breaker, lambda t: -t["oom_score"])
    kernel = max(tasks, key=lambda t: t["oom_score"], default=None)
    by_policy = sorted((t for t in tasks if not (memcg and t["rank"] == "never")), key=lambda t: (-t["_order"][0], tie(t)))
    for task in tasks:
        del task["_order"]
    return by_policy, kernel


def explain(policy_dir=None, memcg=None, top=EXPLAIN_TOP):
    """Which process the policy would kill now (in a global OOM, or an OOM of cgroup memcg), and which one the
    kernel would kill without it; for the desired policy, or any built one (a preview: nothing is attached)."""
    if policy_dir is None:
        desired = _read(DESIRED_FILE)
        if not desired:
            raise Failure(1, "no policy runs here: give the directory of a built policy (bpfoomctl explain DIR)")
        policy_dir = policy_dir_of(split_key(desired)[0])
    manifest = read_manifest(policy_dir)
    if not vmlinux_btf():
        raise Failure(3, "this kernel exposes no BTF (/sys/kernel/btf/vmlinux): no BPF program can rank its tasks")
    paths = cgroup_paths()
    if memcg and memcg not in paths.values():
        raise Failure(1, f"no cgroup {memcg} under /sys/fs/cgroup: give a path such as /system.slice/nginx.service")
    started = time.monotonic()
    candidates = run_explain(policy_dir, manifest)
    ranked, kernel = rank_candidates(candidates, manifest.get("tie_breaker", "kernel"), memcg, paths)
    victim = ranked[0] if ranked else None
    return {"changed": False, "policy_name": manifest["name"], "policy_hash": manifest["hash"],
            "tie_breaker": manifest.get("tie_breaker", "kernel"),
            "oom": f"memcg {memcg}" if memcg else "global", "tasks": len(ranked), "would_kill": victim,
            "kernel_would_kill": kernel, "agrees": bool(victim and kernel and victim["pid"] == kernel["pid"]),
            "candidates": ranked[:top], "kernel_exempt": exempt_candidates(candidates, memcg, paths)[:top],
            "seconds": round(time.monotonic() - started, 3)}


# --- guarding the pins ------------------------------------------------------

def _same_file(path, fd):
    try:
        info = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (info.st_dev, info.st_ino) == (held.st_dev, held.st_ino)


def guard_pins(held):
    """Keep the bpffs of this agent's pins alive; move the pins to a bpffs mounted anew. Returns the fd held.

    The running agent holds its pin directory open: `umount /sys/fs/bpf` then fails (target is busy),
    and a lazy unmount (umount -l) leaves the pins, so the policy, attached. Once a bpffs is mounted
    on /sys/fs/bpf again, the desired policy's pins move there (unless an apply pinned it there
    meanwhile) and the old bpffs lets everything go.
    """
    if held is not None and _same_file(PIN_ROOT, held):
        return held
    if held is not None:
        if not bpffs_mounted():
            return held                     # nowhere to move to yet: keep the policy where it is
        with Lock():
            moved = _move_pins(held)
        os.close(held)
        if moved:
            journal_send("pins_moved", {"MESSAGE": f"bpfoom: bpffs was unmounted under policy {moved}; its pins "
                                                   f"moved to the bpffs mounted on {BPFFS} since", "PRIORITY": 4,
                                        "BPFOOM_POLICY_NAME": moved})
    try:
        return os.open(PIN_ROOT, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None


def _move_pins(held):
    """Re-pin the desired policy from the old bpffs (reached through the held fd) under PIN_ROOT."""
    old_root, desired, moved = f"/proc/self/fd/{held}", _read(DESIRED_FILE), None
    for policy_hash in os.listdir(old_root):
        old_dir, new_dir = os.path.join(old_root, policy_hash), os.path.join(PIN_ROOT, policy_hash)
        if policy_hash == desired and not os.path.isdir(new_dir):
            os.makedirs(new_dir, mode=0o700)
            for name in os.listdir(old_dir):
                fd = libbpf().bpf_obj_get(os.path.join(old_dir, name).encode())
                if fd < 0 or libbpf().bpf_obj_pin(fd, os.path.join(new_dir, name).encode()) != 0:
                    raise Failure(1, f"re-pinning {name} of {policy_hash} in {new_dir} failed: {_errno_text()}")
                os.close(fd)
            moved = pinned_view(policy_hash)["policy_name"]
        unpin(old_dir)
    return moved


# --- metrics ---------------------------------------------------------------

METRICS_EVERY_S = 10


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(view, hook, events_logged, now, inputs=()):
    """The agent's metrics in Prometheus' text format. view: managed_status(); inputs: the running policy's host
    input reports."""
    policy = view["attached_policy"]
    attached = next((p for p in view["policies"] if p["attached"]), {})
    lines = [
        "# HELP bpfoom_agent_up 1 while the bpfoom agent runs (stale file: see bpfoom_metrics_updated_seconds).",
        "# TYPE bpfoom_agent_up gauge", "bpfoom_agent_up 1",
        "# HELP bpfoom_metrics_updated_seconds When the agent last wrote these metrics (Unix time).",
        "# TYPE bpfoom_metrics_updated_seconds gauge", f"bpfoom_metrics_updated_seconds {now:.0f}",
        "# HELP bpfoom_hook_present 1 when the kernel carries the BPF OOM hook.",
        "# TYPE bpfoom_hook_present gauge", f"bpfoom_hook_present {int(hook)}",
        "# HELP bpfoom_policy_attached 1 when a bpfoom policy is attached to the hook.",
        "# TYPE bpfoom_policy_attached gauge", f"bpfoom_policy_attached {int(policy is not None)}",
        "# HELP bpfoom_events_logged_total Selections and shadow verdicts the agent wrote to the journal since it "
        "started.",
        "# TYPE bpfoom_events_logged_total counter", f"bpfoom_events_logged_total {events_logged}",
    ]
    if policy:
        lines += [
            "# HELP bpfoom_policy_info The attached policy: its name, hash and mode (enforce or shadow).",
            "# TYPE bpfoom_policy_info gauge",
            f'bpfoom_policy_info{{policy_name="{_label(policy["policy_name"])}",'
            f'policy_hash="{_label(policy["policy_hash"])}",mode="{policy["mode"]}"}} 1',
            "# HELP bpfoom_policy_evaluations_total Candidates the attached policy ranked since it was attached.",
            "# TYPE bpfoom_policy_evaluations_total counter",
            f"bpfoom_policy_evaluations_total {attached.get('evaluations') or 0}",
            "# HELP bpfoom_policy_selections_total Times the attached policy selected a candidate since it was "
            "attached (shadow: would have selected).",
            "# TYPE bpfoom_policy_selections_total counter",
            f"bpfoom_policy_selections_total {attached.get('selections') or 0}",
            "# HELP bpfoom_ooms_total OOMs the attached policy saw since it was attached.",
            "# TYPE bpfoom_ooms_total counter",
            f"bpfoom_ooms_total {attached.get('ooms') or 0}",
        ]
        if policy["mode"] == "shadow":
            lines += ["# HELP bpfoom_shadow_outcomes_total OOMs a shadow policy saw, by what it would have done: "
                      "agree, disagree, no_victim (it would have found none), not_comparable (the kernel decided "
                      "without a scan).", "# TYPE bpfoom_shadow_outcomes_total counter"]
            lines += [f'bpfoom_shadow_outcomes_total{{outcome="{outcome}"}} {attached.get("shadow_" + outcome) or 0}'
                      for outcome in ("agree", "disagree", "no_victim", "not_comparable")]
    if policy and inputs:
        lines += ["# HELP bpfoom_host_input_ok 1 when what the policy names resolves on this host: its target runs "
                  "(select_pid), every unit or slice it names exists; 0: it selects nobody, or matches nothing by "
                  "a name.", "# TYPE bpfoom_host_input_ok gauge"]
        lines += [f'bpfoom_host_input_ok{{map="{_label(r["map"])}",input="{_label(input_name(r))}"}} '
                  f'{0 if r["problem"] else 1}' for r in inputs]
    return "\n".join(lines) + "\n"


def write_metrics(path, text):
    """The metrics file, replaced whole (the collector never reads half of it), readable by node_exporter
    (not root); rewritten every 10 s, so not worth an fsync. False when it cannot be written."""
    try:
        replace_file(path, text, mode=0o644, durable=False)
    except OSError:
        return False
    return True


# --- events ----------------------------------------------------------------

def journal_payload(fields):
    """journald's native protocol, every field in its binary-safe form: NAME, a newline, the value's length
    (64-bit little-endian), the value, a newline. No value (a comm a process chose, like "x\\nPRIORITY=0")
    can end its field early and forge another, or cut MESSAGE."""
    payload = bytearray()
    for name, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode(errors="replace")
        payload += name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return bytes(payload)


def printable(text):
    """A process name as one line of a MESSAGE: control characters escaped (the field keeps it as is)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def journal_send(kind, fields):
    """One structured entry of a kind of MESSAGE_IDS."""
    import socket  # only the events reader needs it
    fields = dict(fields, MESSAGE_ID=MESSAGE_IDS[kind], SYSLOG_IDENTIFIER="bpfoom")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(journal_payload(fields), JOURNAL_SOCKET)


def basis_view(basis, paths=None):
    """What a rank rested on, for people: the matchers that decided (and who chose each identity), the task's
    uid, the named cgroup that matched with its owner."""
    matched = [name for bit, name, _who in MATCHED if basis.matched & bit]
    view = {"matched": matched or ["nothing (the template's default rank)"], "uid": basis.uid}
    if basis.cgroup_id:
        paths = paths if paths is not None else cgroup_paths()
        view.update(cgroup=paths.get(basis.cgroup_id, f"cgroup id {basis.cgroup_id}"),
                    cgroup_owner=basis.cgroup_owner, cgroup_vouched=bool(basis.cgroup_vouched))
    return view


def basis_text(view):
    """A basis_view() as a phrase of a journal MESSAGE."""
    who = {name: who for _bit, name, who in MATCHED}
    parts = []
    for name in view["matched"]:
        if name == "cgroup":
            parts.append(f"cgroup {view['cgroup']} (owner uid {view['cgroup_owner']}, "
                         f"{'vouched for by root' if view['cgroup_vouched'] else 'not vouched for: may not protect'})")
        elif name in who:
            parts.append(f"{name} ({who[name]})")
        else:
            parts.append(name)
    return f"rank rested on {' and '.join(parts)}; uid {view['uid']}"


def basis_fields(prefix, view):
    """A basis_view() as journal fields."""
    fields = {f"{prefix}_MATCHED": ",".join(view["matched"]), f"{prefix}_UID": view["uid"]}
    if "cgroup" in view:
        fields.update({f"{prefix}_MATCHED_CGROUP": view["cgroup"], f"{prefix}_MATCHED_CGROUP_OWNER": view["cgroup_owner"],
                       f"{prefix}_MATCHED_CGROUP_VOUCHED": int(view["cgroup_vouched"])})
    return fields


def selection_entry(event, policy):
    """The journal entry of one task an enforcing policy selected (an Event)."""
    comm, displaced_comm = _text(event.comm), _text(event.displaced_comm)
    displaced = f"{printable(displaced_comm)}[{event.displaced_pid}]" if event.displaced_pid else "nothing"
    basis = basis_view(event.basis)
    return "selection", {
        "MESSAGE": f"bpfoom policy {policy['policy_name']} selected {printable(comm)}[{event.pid}] "
                   f"(cgroup {event.cgroup_id}), displacing {displaced}; {basis_text(basis)}",
        **basis_fields("BPFOOM_VICTIM", basis),
        "PRIORITY": 5,
        "BPFOOM_POLICY_NAME": policy["policy_name"], "BPFOOM_POLICY_HASH": policy["policy_hash"],
        "BPFOOM_VICTIM_PID": event.pid, "BPFOOM_VICTIM_COMM": comm,
        "BPFOOM_VICTIM_CGROUP_ID": event.cgroup_id, "BPFOOM_VICTIM_RANK": event.rank,
        "BPFOOM_DISPLACED_PID": event.displaced_pid, "BPFOOM_DISPLACED_COMM": displaced_comm,
    }


def shadow_entry(record, policy):
    """The journal entry of one OOM a shadow policy saw (a ShadowRecord): its choice beside the kernel's."""
    outcome, reason = SHADOW_OUTCOMES.get(record.outcome, ("not_comparable", f"outcome {record.outcome}"))
    policy_comm, kernel_comm = _text(record.policy_comm), _text(record.kernel_comm)
    mine = f"{printable(policy_comm)}[{record.policy_pid}]" if record.policy_pid else None
    kernel = (f"the kernel killed {printable(kernel_comm)}[{record.kernel_pid}]" if record.kernel_pid
              else "the kernel killed nothing")
    name = f"bpfoom policy {policy['policy_name']} (shadow)"
    if reason:
        message, priority = f"{name} cannot compare: {reason}; {kernel}", 6
    elif outcome == "no_victim":
        message, priority = (f"{name} would have found no victim (enforced, this OOM would have killed nothing); "
                             f"{kernel}"), 3
    else:
        message, priority = f"{name} would have killed {mine}; {kernel}", 5 if outcome == "agree" else 4
    basis = basis_view(record.policy_basis) if record.policy_pid else None
    if basis:
        message += f"; the policy's {basis_text(basis)}"
    return "shadow", {
        **(basis_fields("BPFOOM_POLICY_VICTIM", basis) if basis else {}),
        "MESSAGE": message, "PRIORITY": priority,
        "BPFOOM_POLICY_NAME": policy["policy_name"], "BPFOOM_POLICY_HASH": policy["policy_hash"],
        "BPFOOM_MODE": "shadow", "BPFOOM_OUTCOME": outcome, "BPFOOM_OOM": "memcg" if record.memcg else "global",
        "BPFOOM_CANDIDATES": record.candidates,
        "BPFOOM_POLICY_VICTIM_PID": record.policy_pid, "BPFOOM_POLICY_VICTIM_COMM": policy_comm,
        "BPFOOM_POLICY_VICTIM_RANK": record.policy_rank, "BPFOOM_POLICY_VICTIM_CGROUP_ID": record.policy_cgroup_id,
        "BPFOOM_KERNEL_VICTIM_PID": record.kernel_pid, "BPFOOM_KERNEL_VICTIM_COMM": kernel_comm,
        "BPFOOM_KERNEL_VICTIM_CGROUP_ID": record.kernel_cgroup_id,
    }


def inputs_entry(report, policy):
    """The journal entry of a host input that changed (a target restarted, stopped; a unit came or went)."""
    what = input_name(report)
    now = report["problem"] or (f"now PID {report['pid']}" if "target" in report else
                                "resolved to " + ", ".join(f"{n} -> {u}" for n, u in report["units"].items()))
    return "inputs", {"MESSAGE": f"bpfoom policy {policy['policy_name']}: {what}: {now}",
                      "PRIORITY": 4 if report["problem"] else 5,
                      "BPFOOM_POLICY_NAME": policy["policy_name"], "BPFOOM_POLICY_HASH": policy["policy_hash"],
                      "BPFOOM_INPUT_MAP": report["map"], "BPFOOM_INPUT": what,
                      "BPFOOM_INPUT_PID": report.get("pid") or 0, "BPFOOM_INPUT_PROBLEM": report["problem"] or ""}


class HostInputs:
    """The events loop's hold on the running policy's host inputs: resolved again when due, every change a
    journal entry. The manifest is read once per policy (a stored policy never changes under its hash)."""

    def __init__(self):
        self.key, self.manifest, self.reports, self.resolved_at = None, None, [], 0.0

    def of(self, key):
        """The reports of the policy pinned under key, if they are that policy's."""
        return self.reports if key == self.key else ()

    def due(self):
        """Every REFRESH_EVERY_S; at once when a target the policy selects has gone (a restart: its new PID must
        be selected before the next OOM) or is a pidfile's (cheap to read again)."""
        if time.monotonic() - self.resolved_at >= REFRESH_EVERY_S:
            return True
        for host_input in self.manifest.get("host_inputs", []):
            if "pid_of" not in host_input:
                continue
            if "pidfile" in host_input["pid_of"]:
                return True
            fd = pinned_input_fd(self.key, host_input["map"])
            if fd < 0:
                continue
            held = map_entries(fd, *input_sizes(host_input))
            os.close(fd)
            if not held or any(start_ticks(ctypes.c_uint32.from_buffer_copy(k).value) !=
                               ctypes.c_uint64.from_buffer_copy(v).value for k, v in held.items()):
                return True
        return False

    def follow(self, key):
        """Resolve the inputs of the policy pinned under key when they are due (or the policy is new)."""
        same = key == self.key
        if same and not self.due():
            return
        try:
            manifest = self.manifest if same else stored_manifest(key)
            with Lock():                # not while an apply swaps the policy
                reports = refresh_host_inputs(key, manifest)
        except Failure as failure:
            print(f"bpfoomctl: cannot refresh the policy's host inputs: {failure}", file=sys.stderr)
            return
        if same:                        # the same policy: each change of what it resolves to is an entry
            problems = {report["map"]: report["problem"] for report in self.reports}
            changed = [r for r in reports if r["changed"] or problems.get(r["map"]) != r["problem"]]
            policy = identity_of(pinned_view(key)) if changed else None
            for report in changed:
                journal_send(*inputs_entry(report, policy))
        self.key, self.manifest, self.reports, self.resolved_at = key, manifest, reports, time.monotonic()


# Each mode's ring-buffer record and its journal entry.
MODE_RECORDS = {"enforce": (Event, selection_entry), "shadow": (ShadowRecord, shadow_entry)}


def events(once=False, metrics_file=None):
    """Follow the attached policy's ring buffer; re-open it when the policy changes; write the metrics."""
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    state = {"policy": None, "count": 0}

    def handle(_ctx, data, size):
        policy = state["policy"]
        record_type, entry = MODE_RECORDS[policy["mode"]]
        if size < ctypes.sizeof(record_type):
            return 0
        journal_send(*entry(record_type.from_address(data), policy))
        state["count"] += 1
        return 0

    callback = callback_type(handle)
    ring, ring_key, ring_fd, pins = None, None, -1, None
    hook, metrics_due, metrics_failed = not missing_hook_functions(), 0.0, False
    btf = bool(vmlinux_btf())
    inputs = HostInputs()
    while True:
        if not once:
            pins = guard_pins(pins)
        desired = _read(DESIRED_FILE)
        if btf and desired and os.path.isdir(os.path.join(PIN_ROOT, desired)):
            inputs.follow(desired)
        if metrics_file and time.monotonic() >= metrics_due:
            metrics_due = time.monotonic() + METRICS_EVERY_S
            view = managed_status() if btf else {"attached_policy": None, "policies": []}
            written = write_metrics(metrics_file, metrics_text(view, hook, state["count"], time.time(),
                                                               inputs.of(desired)))
            if not written and not metrics_failed:
                print(f"bpfoomctl: cannot write {metrics_file} (its directory must exist when the agent starts): "
                      "no metrics", file=sys.stderr)
            metrics_failed = not written
        # Cheap to poll: a new policy (or the same one attached anew) shows as another events map.
        fd = libbpf().bpf_obj_get(os.path.join(PIN_ROOT, desired, "events").encode()) if desired else -1
        if fd >= 0:
            key = (desired, _object_id(fd, MapInfo))
            if key != ring_key:
                if ring:
                    libbpf().ring_buffer__free(ring)
                    os.close(ring_fd)       # the ring uses its map's fd until freed
                ring_fd = fd
                ring = libbpf().ring_buffer__new(fd, ctypes.cast(callback, ctypes.c_void_p), None, None)
                ring_key, state["policy"] = key, identity_of(pinned_view(desired))
            else:
                os.close(fd)
        if ring:
            libbpf().ring_buffer__poll(ring, 0 if once else 2000)
        elif not once:
            time.sleep(2)
        if once:
            return {"changed": False, "events": state["count"]}


# --- command line ----------------------------------------------------------

def main(argv):
    commands = {"apply": (1,), "boot": (0,), "detach": (0,), "stop": (0,), "rollback": (0,), "status": (0,),
                "events": (0,), "explain": (0, 1)}
    args = [arg for arg in argv[1:] if not arg.startswith("--")]
    options = dict(arg[2:].partition("=")[::2] for arg in argv[1:] if arg.startswith("--"))
    if not args or args[0] not in commands or len(args) - 1 not in commands[args[0]] or \
            options.get("mode", "enforce") not in MODES:
        print(__doc__, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print(json.dumps({"failed": True, "rc": 1, "msg": "bpfoomctl needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)"}))
        return 1
    try:
        command = args[0]
        if command == "apply":
            result = apply(args[1], options.get("mode", "enforce"))
        elif command == "explain":
            result = explain(args[1] if len(args) > 1 else None, memcg=options.get("cgroup"),
                             top=int(options.get("top", EXPLAIN_TOP)))
        elif command == "events":
            result = events(once="once" in options, metrics_file=options.get("metrics-file"))
        else:
            result = {"boot": boot, "detach": detach, "stop": stop, "rollback": rollback, "status": status}[command]()
    except OSError as error:
        if not error.filename or not str(error.filename).startswith(STATE_DIR):
            raise
        failure = Failure(8, f"cannot write {error.filename}: {error.strerror}; nothing was changed (the "
                             f"running policy and what boot re-applies are as before): free space in {STATE_DIR} "
                             "and apply again")
    except Failure as caught:
        failure = caught
    else:
        print(json.dumps(result, indent=1, sort_keys=True))
        return 0
    print(json.dumps({"failed": True, "rc": failure.code, "msg": str(failure)}))
    print(f"bpfoomctl: {failure}", file=sys.stderr)
    return failure.code


if __name__ == "__main__":
    sys.exit(main(sys.argv))

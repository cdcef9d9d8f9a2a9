# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The structures shared with the kernel and with the policy, as ctypes types: read by field, never at byte
offsets. What the policy's BPF C declares (templates/bpf/include/bpfoom_core.h; tests/compile/
test_shared_types.py compares each with a compiled policy) and what the kernel's UAPI declares (linux/bpf.h)."""

from __future__ import annotations

import ctypes

BPFOOM_POLICY_NAME_LEN = 16
BPFOOM_COMM_LEN = 16
BPFOOM_RANK_NEVER = -1


class Identity(ctypes.Structure):
    """struct bpfoom_identity: the policy's name and hash, in its .rodata.id map."""
    _fields_ = [("name", ctypes.c_char * BPFOOM_POLICY_NAME_LEN), ("hash", ctypes.c_char * 65)]


class Counters(ctypes.Structure):
    """struct bpfoom_counters, in the policy's .data.counters map."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "evaluations", "selections", "ooms",
        "shadow_agree", "shadow_disagree", "shadow_no_victim", "shadow_not_comparable")]


COUNTER_NAMES = tuple(name for name, _type in Counters._fields_)


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
ATTACH_TYPES = {24: "trace_fentry", 25: "trace_fexit", 26: "modify_return"}
BTF_KIND_FUNC = 12


def text(raw):
    """A C string of a structure, as text (a name a process chose may be any bytes)."""
    return raw.decode(errors="replace")

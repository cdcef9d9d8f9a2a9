# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the agent and the modules agree on, defined once: where the agent lives and keeps its state, the
kernel functions a policy attaches to, each mode's programs and maps (templates/bpf/frame.bpf.c.j2 declares
them; tests/compile/test_contract.py checks every compiled policy against them) and the exit codes.

Imported by the agent on the host and by plugins/module_utils/agent_host.py: standard library only."""

from __future__ import annotations

import enum
import os
from collections import namedtuple

# Where the agent is installed (plugins/module_utils/agent_host.py installs it there).
LIB_DIR = "/usr/local/lib/bpfoom"
PACKAGE_DIR = os.path.join(LIB_DIR, "bpfoomctl")
COMMAND = "/usr/local/sbin/bpfoomctl"
UNIT = "bpfoom.service"
UNIT_FILE = os.path.join("/etc/systemd/system", UNIT)
# The journal catalog of its entries (journalctl -x): systemd reads /usr/local/lib/systemd/catalog too.
CATALOG = "bpfoom.catalog"
CATALOG_FILE = os.path.join("/usr/local/lib/systemd/catalog", CATALOG)
# The command: the package imported, not run as a script, so that Python keeps its compiled bytecode between
# runs; -I -S skip what it does not need (user site, site).
SHIM_TEXT = f"""#!/bin/sh
# The bpfoomctl command (bpfoomctl --help). The program is the package {PACKAGE_DIR}.
exec /usr/bin/python3 -I -S -c 'import sys
sys.path.insert(0, "{LIB_DIR}")
from bpfoomctl.cli import main
sys.exit(main(sys.argv))' "$@"
"""
# What earlier layouts installed and this one does not (removed when the agent is installed).
OLD_LAYOUT = (os.path.join(LIB_DIR, "bpfoomctl.py"), os.path.join(LIB_DIR, "__pycache__"))

# Where it keeps its state, and where it pins.
STATE_DIR = "/var/lib/bpfoom"
INCOMING_DIR = os.path.join(STATE_DIR, "incoming")        # the modules stage a built policy here for apply
BPFFS = "/sys/fs/bpf"
PIN_ROOT = os.path.join(BPFFS, "bpfoom")
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# The RFC hook: the function a policy's fmod_ret program replaces, its naming fentry and kfunc.
HOOK_FUNCTIONS = ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name")
# What shadow mode observes, on any kernel with BTF.
SHADOW_FUNCTIONS = ("out_of_memory", "oom_badness", "oom_kill_process")

# One program of a mode: the name of its pin, its attach type and the kernel function it attaches to.
Link = namedtuple("Link", "pin attach_type target")
# The programs of each mode of a policy. A policy is attached in a mode when the kernel holds every link of
# that mode, on those functions.
MODES = {
    "enforce": {"bpfoom_evaluate_task": Link("evaluate", "modify_return", "bpf_oom_evaluate_task"),
                "bpfoom_set_policy_name": Link("name", "trace_fentry", "bpf_set_policy_name")},
    "shadow": {"bpfoom_shadow_oom_start": Link("oom_start", "trace_fentry", "out_of_memory"),
               "bpfoom_shadow_candidate": Link("candidate", "trace_fexit", "oom_badness"),
               "bpfoom_shadow_kill": Link("kill", "trace_fentry", "oom_kill_process"),
               "bpfoom_shadow_oom_end": Link("oom_end", "trace_fexit", "out_of_memory")},
}
# The ring buffer each mode's programs write, pinned beside its links as EVENTS_PIN.
MODE_EVENTS = {"enforce": "bpfoom_events", "shadow": "bpfoom_shadow_events"}
EVENTS_PIN = "events"
# The iter/task program that ranks every task now (explain).
EXPLAIN_PROGRAM = "bpfoom_explain"
PROGRAMS = frozenset(name for programs in MODES.values() for name in programs) | {EXPLAIN_PROGRAM}
# The maps the agent reads by name: the policy's identity and counters, and the ring buffers.
IDENTITY_MAP = ".rodata.id"
COUNTERS_MAP = ".data.counters"
MAPS = frozenset(MODE_EVENTS.values()) | {IDENTITY_MAP, COUNTERS_MAP}


class ExitCode(enum.IntEnum):
    """bpfoomctl's exit codes, one meaning each; plugins/module_utils/agent_host.py reports them by name."""
    OK = 0
    FAILED = 1                  # anything else; the message says what
    USAGE = 2                   # the command line is wrong
    NO_HOOK = 3                 # the kernel lacks the BPF OOM hook (enforce mode)
    VERIFIER = 4                # the kernel's verifier rejected the policy
    MISMATCH = 5                # the object does not match its manifest
    UNSAFE_PATH = 6             # a file or directory others could have written
    NO_BPFFS_OR_LIBBPF = 7      # bpffs not mounted, libbpf missing or too old
    STATE_NOT_WRITABLE = 8      # the state directory cannot be written: nothing was changed
    NO_SHADOW_POINTS = 9        # the kernel lacks what shadow mode attaches to
    NO_BTF = 10                 # the kernel exposes no BTF: no policy can be loaded at all


class Failure(Exception):
    """A failure with its exit code and a message saying what to do."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = ExitCode(code)

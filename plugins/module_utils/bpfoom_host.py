# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host side of the modules: ask the agent (bpfoomctl) and the kernel what runs here."""

from __future__ import annotations

import json
import os

BPFOOMCTL = "/usr/local/sbin/bpfoomctl"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
HOOK_FUNCTIONS = ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name")
HOOK_MISSING_RC = 3


def run_bpfoomctl(module, *args):
    """Run bpfoomctl; return its JSON result, or fail the task with its message."""
    if not os.path.exists(BPFOOMCTL):
        module.fail_json(msg=f"{BPFOOMCTL} is not installed: apply the bpfoom.fleet.agent role first")
    rc, out, err = module.run_command([BPFOOMCTL, *args], environ_update={"LANG": "C", "LC_ALL": "C"})
    try:
        result = json.loads(out)
    except ValueError:
        module.fail_json(msg=f"bpfoomctl {' '.join(args)} failed (rc={rc}): {err.strip() or out.strip()}", rc=rc)
    if rc != 0 or result.get("failed"):
        module.fail_json(msg=result.get("msg") or err.strip(), rc=rc, hook_missing=rc == HOOK_MISSING_RC)
    return result


def btf_hook_functions():
    """Which hook functions the kernel's BTF names, without libbpf (the agent may not be installed).

    A function of the kernel is in BTF with its name in BTF's string table; these
    names are unique to the hook series, so their presence is the hook's.
    """
    try:
        with open(VMLINUX_BTF, "rb") as handle:
            data = handle.read()
    except OSError:
        return {name: False for name in HOOK_FUNCTIONS}
    return {name: b"\0" + name.encode() + b"\0" in data for name in HOOK_FUNCTIONS}


def bpffs_mounted():
    with open("/proc/mounts") as mounts:
        return any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in mounts)


def policy_identity(status):
    """name and hash of the policy the agent keeps attached, or None."""
    attached = status.get("attached_policy")
    return {"policy_name": attached["policy_name"], "policy_hash": attached["policy_hash"]} if attached else None

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the kernel holds, in one report: hook, links, programs, policy names, counters, host inputs."""

from __future__ import annotations

import os

from . import inputs, kernel, libbpf, pins
from .attach import rollback_target
from .contract import HOOK_FUNCTIONS, SHADOW_FUNCTIONS, Failure
from .store import split_key


def desired_problem(store):
    """Why the agent could not re-apply the desired policy from its store (at boot, on reload), or None."""
    desired = store.desired()
    if not desired:
        return None
    try:
        store.stored_manifest(desired)
    except Failure as failure:
        return str(failure)
    return None


def held_inputs(store, key):
    try:
        manifest = store.stored_manifest(key)
    except Failure:
        return []
    return inputs.held(key, manifest)


def status(store):
    missing, missing_shadow = kernel.missing_functions(HOOK_FUNCTIONS), kernel.missing_functions(SHADOW_FUNCTIONS)
    desired = store.desired()
    desired_hash, desired_mode = split_key(desired) if desired else (None, None)
    report = {
        "kernel_release": os.uname().release,
        "btf": bool(kernel.vmlinux_btf()),
        "hook": not missing,
        "hook_functions": {name: name not in missing for name in HOOK_FUNCTIONS},
        "bpffs": kernel.bpffs_mounted(),
        "libbpf_version": "%d.%d" % libbpf.version(),
        "desired_hash": desired_hash,
        "desired_mode": desired_mode,
        "shadow_functions": {name: name not in missing_shadow for name in SHADOW_FUNCTIONS},
        "desired_problem": desired_problem(store),
        "last_known_good": store.good(),
        "rollback_target": rollback_target(store),
        "attached_policy": None,
        "policies": [],
        "host_inputs": [],
        "input_problems": [],
    }
    btf = kernel.vmlinux_btf()
    if not btf:
        return report                       # no BTF: nothing can be attached, by the agent or anyone
    managed = pins.managed_status()
    ours = {link["link_id"] for policy in managed["policies"] for link in policy["links"]}
    # Links on the hook that are not pinned where this agent pins: the desired policy while bpffs is
    # unmounted (the running agent keeps it: see daemon.guard_pins), or another tool's policy; shown as the kernel
    # has it.
    unpinned = {}
    for link, prog in kernel.hook_links(btf, known=ours):
        mode = "enforce" if link["target"] in HOOK_FUNCTIONS else "shadow"
        managed_here = (prog.get("policy_hash"), mode) == (desired_hash, desired_mode)
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
    reports = held_inputs(store, desired) if desired and managed["attached_policy"] else []
    report.update(host_inputs=reports, input_problems=inputs.problems(reports))
    return report

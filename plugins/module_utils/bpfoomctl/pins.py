# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The policies this agent pinned in bpffs (PIN_ROOT/<key>: each program's link, its ring buffer, its host
input maps), read back from the kernel through their pins."""

from __future__ import annotations

import os

from . import abi, kernel, libbpf
from .contract import EVENTS_PIN, MODES, PIN_ROOT, ExitCode, Failure
from .store import remove_flat_dir, split_key

INPUT_PREFIX = "input-"


def pin_dir(key):
    return os.path.join(PIN_ROOT, key)


def pinned_keys():
    """The keys of the policies this agent pinned."""
    return sorted(os.listdir(PIN_ROOT)) if os.path.isdir(PIN_ROOT) else []


def input_pin(directory, map_name):
    return os.path.join(directory, INPUT_PREFIX + map_name)


def pinned_input_fd(key, map_name):
    """An fd of the pinned map of a host input of the policy pinned under key, or -1."""
    return libbpf.lib().bpf_obj_get(input_pin(pin_dir(key), map_name).encode())


def events_fd(key):
    """An fd of the ring buffer of the policy pinned under key, or -1."""
    return libbpf.lib().bpf_obj_get(os.path.join(pin_dir(key), EVENTS_PIN).encode())


unpin = remove_flat_dir                    # unpinning a policy's links and maps detaches them


def pinned_view(key):
    """One pinned policy as the kernel holds it: its links and the identity in its programs' maps."""
    btf, (_hash, mode) = kernel.vmlinux_btf(), split_key(key)
    links = {}
    for link in MODES[mode].values():
        fd = libbpf.lib().bpf_obj_get(os.path.join(pin_dir(key), link.pin).encode())
        if fd >= 0:
            links[link.pin] = kernel.link_info(fd, btf)
            os.close(fd)
    identity = {}                           # a program holds only the maps it uses: the counters are in some
    for link in links.values():             # of them, so every program of the policy is read
        identity.update((name, value) for name, value in kernel.program_info(link["prog_id"]).items()
                        if identity.get(name) is None)
    view = {"policy_name": identity.get("policy_name"), "policy_hash": identity.get("policy_hash"), "mode": mode,
            "managed": True, "pinned": True, "links": [dict(link, tag=identity.get("tag")) for link in links.values()],
            "attached": all(link.pin in links and (links[link.pin]["attach_type"], links[link.pin]["target"]) ==
                            (link.attach_type, link.target) for link in MODES[mode].values())}
    view.update((name, identity.get(name)) for name in abi.COUNTER_NAMES)
    return view


def identity_of(view):
    return {"policy_name": view["policy_name"], "policy_hash": view["policy_hash"], "mode": view["mode"]}


def managed_status():
    """The agent's own policies, read from the kernel through their pins (cheaper than a full status)."""
    views = [pinned_view(key) for key in pinned_keys()]
    attached = [view for view in views if view["attached"]]
    return {"attached_policy": identity_of(attached[-1]) if attached else None, "policies": views}


def verify(key, manifest):
    """The kernel holds every link of this policy's mode, on the right functions, with the right name and hash."""
    view, (policy_hash, mode) = pinned_view(key), split_key(key)
    if not view["attached"]:
        raise Failure(ExitCode.FAILED, f"policy {manifest['name']} ({mode}) is only partly attached: "
                                       f"{[link['target'] for link in view['links']]}")
    if (view["policy_name"], view["policy_hash"]) != (manifest["name"], policy_hash):
        raise Failure(ExitCode.FAILED, f"the kernel reports {view['policy_name']!r} ({view['policy_hash']}), "
                                       f"expected {manifest['name']!r} ({policy_hash})")
    return view

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The events loop, bpfoom.service's main process: a journal entry per selection (per OOM in shadow mode),
the metrics every 10 s, the running policy's host inputs kept current, its pins kept alive."""

from __future__ import annotations

import ctypes
import os
import sys
import time

from . import abi, inputs, journal, kernel, libbpf, metrics, pins
from .contract import HOOK_FUNCTIONS, PIN_ROOT, ExitCode, Failure


def _same_file(path, fd):
    try:
        info = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (info.st_dev, info.st_ino) == (held.st_dev, held.st_ino)


def guard_pins(store, held):
    """Keep the bpffs of this agent's pins alive; move the pins to a bpffs mounted anew. Returns the fd held.

    The running agent holds its pin directory open: `umount /sys/fs/bpf` then fails (target is busy),
    and a lazy unmount (umount -l) leaves the pins, so the policy, attached. Once a bpffs is mounted
    on /sys/fs/bpf again, the desired policy's pins move there (unless an apply pinned it there
    meanwhile) and the old bpffs lets everything go.
    """
    if held is not None and _same_file(PIN_ROOT, held):
        return held
    if held is not None:
        if not kernel.bpffs_mounted():
            return held                     # nowhere to move to yet: keep the policy where it is
        with store.lock():
            moved = _move_pins(store, held)
        os.close(held)
        if moved:
            journal.send(*journal.pins_moved_entry(moved))
    try:
        return os.open(PIN_ROOT, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None


def _move_pins(store, held):
    """Re-pin the desired policy from the old bpffs (reached through the held fd) under PIN_ROOT."""
    lib, old_root, desired, moved = libbpf.lib(), f"/proc/self/fd/{held}", store.desired(), None
    for key in os.listdir(old_root):
        old_dir, new_dir = os.path.join(old_root, key), pins.pin_dir(key)
        if key == desired and not os.path.isdir(new_dir):
            os.makedirs(new_dir, mode=0o700)
            for name in os.listdir(old_dir):
                fd = lib.bpf_obj_get(os.path.join(old_dir, name).encode())
                if fd < 0 or lib.bpf_obj_pin(fd, os.path.join(new_dir, name).encode()) != 0:
                    raise Failure(ExitCode.FAILED, f"re-pinning {name} of {key} in {new_dir} failed: "
                                                   f"{libbpf.errno_text()}")
                os.close(fd)
            moved = pins.pinned_view(key)["policy_name"]
        pins.unpin(old_dir)
    return moved


class HostInputs:
    """The events loop's hold on the running policy's host inputs: resolved again when due, every change a
    journal entry. The manifest is read once per policy (a stored policy never changes under its hash)."""

    def __init__(self, store):
        self.store, self.key, self.manifest, self.reports, self.resolved_at = store, None, None, [], 0.0

    def of(self, key):
        """The reports of the policy pinned under key, if they are that policy's."""
        return self.reports if key == self.key else ()

    def due(self):
        """Every REFRESH_EVERY_S; at once when a target the policy selects has gone (a restart: its new PID must
        be selected before the next OOM) or is a pidfile's (cheap to read again)."""
        if time.monotonic() - self.resolved_at >= inputs.REFRESH_EVERY_S:
            return True
        for host_input in self.manifest.get("host_inputs", []):
            if "pid_of" not in host_input:
                continue
            if "pidfile" in host_input["pid_of"]:
                return True
            fd = pins.pinned_input_fd(self.key, host_input["map"])
            if fd < 0:
                continue
            running = inputs.held_targets(fd)
            os.close(fd)
            if not running:
                return True
        return False

    def follow(self, key):
        """Resolve the inputs of the policy pinned under key when they are due (or the policy is new)."""
        same = key == self.key
        if same and not self.due():
            return
        try:
            manifest = self.manifest if same else self.store.stored_manifest(key)
            with self.store.lock():     # not while an apply swaps the policy
                reports = inputs.refresh(key, manifest)
        except Failure as failure:
            sys.stderr.write(f"bpfoomctl: cannot refresh the policy's host inputs: {failure}\n")
            return
        if same:                        # the same policy: each change of what it resolves to is an entry
            problems = {report["map"]: report["problem"] for report in self.reports}
            changed = [r for r in reports if r["changed"] or problems.get(r["map"]) != r["problem"]]
            policy = pins.identity_of(pins.pinned_view(key)) if changed else None
            for report in changed:
                journal.send(*journal.inputs_entry(report, policy))
        self.key, self.manifest, self.reports, self.resolved_at = key, manifest, reports, time.monotonic()


# Each mode's ring-buffer record and its journal entry.
MODE_RECORDS = {"enforce": (abi.Event, journal.selection_entry), "shadow": (abi.ShadowRecord, journal.shadow_entry)}


def events(store, once=False, metrics_file=None):
    """Follow the attached policy's ring buffer; re-open it when the policy changes; write the metrics."""
    lib = libbpf.lib()
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    state = {"policy": None, "count": 0}

    def handle(_ctx, data, size):
        policy = state["policy"]
        record_type, entry = MODE_RECORDS[policy["mode"]]
        if size < ctypes.sizeof(record_type):
            return 0
        journal.send(*entry(record_type.from_address(data), policy, cgroups))
        state["count"] += 1
        return 0

    callback = callback_type(handle)
    ring, ring_key, ring_fd, held_pins = None, None, -1, None
    hook, metrics_due, metrics_failed = not kernel.missing_functions(HOOK_FUNCTIONS), 0.0, False
    btf = bool(kernel.vmlinux_btf())
    host_inputs = HostInputs(store)
    cgroups = kernel.CgroupPaths()
    while True:
        cgroups.follow()
        if not once:
            held_pins = guard_pins(store, held_pins)
        desired = store.desired()
        if btf and desired and os.path.isdir(pins.pin_dir(desired)):
            host_inputs.follow(desired)
        if metrics_file and time.monotonic() >= metrics_due:
            metrics_due = time.monotonic() + metrics.METRICS_EVERY_S
            view = pins.managed_status() if btf else {"attached_policy": None, "policies": []}
            written = metrics.write_metrics(metrics_file, metrics.metrics_text(
                view, hook, state["count"], time.time(), host_inputs.of(desired), desired=bool(desired)))
            if not written and not metrics_failed:
                sys.stderr.write(f"bpfoomctl: cannot write {metrics_file} (its directory must exist when the agent "
                                 "starts): no metrics\n")
            metrics_failed = not written
        # Cheap to poll: a new policy (or the same one attached anew) shows as another events map.
        fd = pins.events_fd(desired) if desired else -1
        if fd >= 0:
            key = (desired, libbpf.object_id(fd, abi.MapInfo))
            if key != ring_key:
                if ring:
                    lib.ring_buffer__free(ring)
                    os.close(ring_fd)       # the ring uses its map's fd until freed
                ring_fd = fd
                ring = lib.ring_buffer__new(fd, ctypes.cast(callback, ctypes.c_void_p), None, None)
                ring_key, state["policy"] = key, pins.identity_of(pins.pinned_view(desired))
            else:
                os.close(fd)
        if ring:
            lib.ring_buffer__poll(ring, 0 if once else 2000)
        elif not once:
            time.sleep(2)
        if once:
            return {"changed": False, "events": state["count"]}

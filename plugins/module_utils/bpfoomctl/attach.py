# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Changing what the kernel runs: apply (make-before-break), detach, the unit's stop, rollback and boot."""

from __future__ import annotations

import os
import time

from . import inputs, kernel, libbpf, pins
from .contract import BPFFS, EVENTS_PIN, MODE_EVENTS, MODES, PIN_ROOT, ExitCode, Failure
from .store import pin_key, split_key


def preflight(mode):
    """What apply checks before it touches anything. The kernel's functions by name only (BTF not parsed: libbpf
    parses it for the load, and a load that fails asks kernel.mode_failure why)."""
    present = kernel.btf_names(kernel.mode_functions(mode))
    if not present or not all(present.values()):
        raise kernel.mode_failure(mode) or Failure(ExitCode.FAILED, f"the kernel's BTF lacks what {mode} mode "
                                                                    "attaches to")
    if not kernel.bpffs_mounted():
        raise Failure(ExitCode.NO_BPFFS_OR_LIBBPF, f"bpffs is not mounted on {BPFFS}: mount it (mount -t bpf bpf "
                                                   f"{BPFFS}) or let systemd do it (sys-fs-bpf.mount)")
    version = libbpf.version()
    if version < libbpf.LIBBPF_MIN:
        raise Failure(ExitCode.NO_BPFFS_OR_LIBBPF,
                      "libbpf %d.%d is too old: bpfoomctl needs libbpf 1.0 or newer (libbpf1)" % version)


def _object_map_fd(obj, name):
    map_ptr = libbpf.lib().bpf_object__find_map_by_name(obj, name.encode())
    return libbpf.lib().bpf_map__fd(map_ptr) if map_ptr else -1


def _share_pinned_inputs(obj, manifest, key):
    """Make the object use the host input maps of the policy pinned under key, if it has them all: True if so."""
    lib, fds = libbpf.lib(), [pins.pinned_input_fd(key, host_input["map"]) for host_input in manifest["host_inputs"]]
    try:
        if any(fd < 0 for fd in fds):
            return False
        for host_input, fd in zip(manifest["host_inputs"], fds):
            if lib.bpf_map__reuse_fd(lib.bpf_object__find_map_by_name(obj, host_input["map"].encode()), fd) != 0:
                raise Failure(ExitCode.FAILED, f"sharing the pinned map {host_input['map']} failed: "
                                               f"{libbpf.errno_text()}")
        return True
    finally:
        for fd in fds:                  # libbpf holds its own copy of each fd it reuses
            if fd >= 0:
                os.close(fd)


def open_policy(policy_dir, manifest, programs, mode=None, pinned_key=None):
    """Open and load the policy's object with only the named programs (the rest are not even verified), and
    fill its host inputs. Returns (object, host input reports); the caller closes the object. mode: what a
    failed load is checked against (a kernel without what the mode attaches to fails as such, not as the
    verifier's). pinned_key: the same policy as pinned under that key, whose host input maps the object shares
    instead of filling its own (no report then): it ranks by what the running policy holds."""
    lib = libbpf.lib()
    libbpf.clear_log()
    obj = lib.bpf_object__open_file(os.path.join(policy_dir, "policy.bpf.o").encode(), None)
    if not obj:
        raise Failure(ExitCode.FAILED, f"libbpf cannot open {policy_dir}/policy.bpf.o: {libbpf.errno_text()}\n"
                                       f"{libbpf.log_tail()}")
    try:
        found, prog = set(), lib.bpf_object__next_program(obj, None)
        while prog:
            name = lib.bpf_program__name(prog).decode()
            found.add(name)
            lib.bpf_program__set_autoload(prog, name in programs)
            prog = lib.bpf_object__next_program(obj, prog)
        if set(programs) - found:
            raise Failure(ExitCode.FAILED, f"policy {manifest['name']!r} has no program "
                                           f"{', '.join(sorted(set(programs) - found))}: it was built by an older "
                                           "bpfoom.fleet; build and roll it out again")
        shared = bool(pinned_key and manifest.get("host_inputs")) and _share_pinned_inputs(obj, manifest, pinned_key)
        if lib.bpf_object__load(obj) != 0:
            failure = mode and kernel.mode_failure(mode)
            if failure:
                raise failure
            why = libbpf.errno_text()
            hint = kernel.lockdown_hint(kernel.lockdown_mode(), "".join(libbpf.LOG))
            raise Failure(ExitCode.VERIFIER, f"the kernel's verifier rejected policy {manifest['name']!r} "
                                             f"({why}){': ' + hint if hint else ''}; "
                                             f"last lines of its log:\n{libbpf.log_tail()}")
        return obj, [] if shared else inputs.fill(lambda name: _object_map_fd(obj, name), manifest)
    except BaseException:
        lib.bpf_object__close(obj)
        raise


def load_and_pin(policy_dir, manifest, pin_dir, mode):
    """Load the programs of mode, attach them and pin their links, their ring buffer and their host inputs."""
    lib = libbpf.lib()
    obj, reports = open_policy(policy_dir, manifest, MODES[mode], mode)
    try:
        os.makedirs(pin_dir, mode=0o700)
        for host_input in manifest.get("host_inputs", []):     # pinned, so the events loop keeps them current
            map_ptr = lib.bpf_object__find_map_by_name(obj, host_input["map"].encode())
            if lib.bpf_map__pin(map_ptr, pins.input_pin(pin_dir, host_input["map"]).encode()) != 0:
                raise Failure(ExitCode.FAILED, f"pinning map {host_input['map']} in {pin_dir} failed: "
                                               f"{libbpf.errno_text()}")
        for name, link in MODES[mode].items():
            attached = lib.bpf_program__attach(lib.bpf_object__find_program_by_name(obj, name.encode()))
            if not attached:
                raise Failure(ExitCode.FAILED, f"attaching {name} failed: {libbpf.errno_text()}\n{libbpf.log_tail()}")
            if lib.bpf_link__pin(attached, os.path.join(pin_dir, link.pin).encode()) != 0:
                raise Failure(ExitCode.FAILED, f"pinning {name} in {pin_dir} failed: {libbpf.errno_text()}")
        events = lib.bpf_object__find_map_by_name(obj, MODE_EVENTS[mode].encode())
        if not events or lib.bpf_map__pin(events, os.path.join(pin_dir, EVENTS_PIN).encode()) != 0:
            raise Failure(ExitCode.FAILED, f"pinning the events map failed: {libbpf.errno_text()}")
    finally:
        # Pinned links stay attached; closing the object drops only this process's references.
        lib.bpf_object__close(obj)
    return reports


def _applied(manifest, mode, attached, reports, changed, notes=()):
    return {"changed": changed, "policy_name": manifest["name"], "policy_hash": manifest["hash"], "mode": mode,
            "previous": attached, "notes": list(notes) + inputs.notes(reports), "host_inputs": reports,
            "input_problems": inputs.problems(reports), "status": pins.managed_status()}


def apply(store, policy_dir, mode="enforce"):
    """Make the kernel run the policy of policy_dir in mode: attached and verified before the previous one goes."""
    manifest = store.manifest(policy_dir)
    key = pin_key(manifest["hash"], mode)
    with store.lock():
        preflight(mode)
        policy_dir = store.keep(policy_dir, manifest)
        attached = pins.managed_status()["attached_policy"]
        if attached and pin_key(attached["policy_hash"], attached["mode"]) == key:
            store.set_desired(key)
            others = [other for other in pins.pinned_keys() if other != key]
            for other in others:           # leftovers of an interrupted swap
                pins.unpin(pins.pin_dir(other))
            reports = inputs.refresh(key, manifest)
            return _applied(manifest, mode, attached, reports, bool(others) or any(r["changed"] for r in reports),
                            ["already attached"])
        os.makedirs(PIN_ROOT, mode=0o700, exist_ok=True)
        pin_dir = pins.pin_dir(key)
        pins.unpin(pin_dir)                # a half-pinned leftover of this same policy
        try:
            reports = load_and_pin(policy_dir, manifest, pin_dir, mode)
            pins.verify(key, manifest)
        except BaseException:
            pins.unpin(pin_dir)            # nothing half-applied: the previous policy still runs
            raise
        # What boot re-applies is written before the old policy goes: a failed write (a full disk)
        # detaches the new one and leaves the host as it was; a crash in between leaves both attached,
        # and the newest decides.
        try:
            store.remember_good(key)
            store.set_desired(key)
        except OSError:
            pins.unpin(pin_dir)
            raise
        # Make-before-break: only now, with the new policy attached and verified, the old one goes.
        # (BPFOOM_OVERLAP_HOLD_S holds both attached a while: the lab test that proves it samples here.)
        time.sleep(float(os.environ.get("BPFOOM_OVERLAP_HOLD_S", "0")))
        for other in pins.pinned_keys():
            if other != key:
                pins.unpin(pins.pin_dir(other))
        return _applied(manifest, mode, attached, reports, True)


def detach(store, forget_desired=True):
    """Detach every policy this agent pinned; an operator's detach also forgets the desired one."""
    with store.lock():
        pinned = pins.pinned_keys()
        for key in pinned:
            pins.unpin(pins.pin_dir(key))
        if forget_desired:
            store.forget_desired()
        return {"changed": bool(pinned), "detached": pinned, "status": pins.managed_status()}


def stop(store):
    """ExecStop of bpfoom.service: detach only when someone asked the agent to stop.

    systemd also runs ExecStop after the agent crashed (SERVICE_RESULT is then
    not "success"), and a restart is a stop then a start: in both cases the
    policy stays attached and the next start adopts it.
    """
    service_result = os.environ.get("SERVICE_RESULT", "success")
    if service_result != "success":
        return {"changed": False, "notes": [f"agent ended with {service_result}: the policy stays attached"]}
    import subprocess  # only the unit's stop needs it
    # The agent runs under systemd, not in a module: there is no AnsibleModule.run_command to call.
    jobs = subprocess.run(  # pylint: disable=ansible-bad-function
        ["systemctl", "list-jobs", "--no-legend", "--plain"], capture_output=True, text=True, check=False
    ).stdout.split("\n")
    if any(line.split()[1:3] in (["bpfoom.service", "restart"], ["bpfoom.service", "try-restart"])
           for line in jobs if len(line.split()) >= 3):
        return {"changed": False, "notes": ["agent restarting: the policy stays attached"]}
    return detach(store, forget_desired=False)         # the next start (or boot) re-applies it


def rollback_target(store):
    """The newest policy (in its mode) that verified here before the desired one and is still stored, or None."""
    current = store.desired()
    for key in reversed(store.good()):
        policy_hash, mode = split_key(key)
        if key != current and os.path.isdir(store.policy_dir(policy_hash)):
            name = store.stored_name(policy_hash)
            if name is not None:
                return {"policy_name": name, "policy_hash": policy_hash, "mode": mode}
    return None


def rollback(store):
    target = rollback_target(store)
    if not target:
        raise Failure(ExitCode.FAILED, "no earlier policy that verified on this host: nothing to roll back to "
                                       "(use detach for the kernel's default)")
    return apply(store, store.policy_dir(target["policy_hash"]), target["mode"])


def boot(store):
    """At boot: re-apply the desired policy, or do nothing if none is desired."""
    desired = store.desired()
    if not desired:
        return {"changed": False, "notes": ["no policy desired"], "status": pins.managed_status()}
    policy_hash, mode = split_key(desired)
    return apply(store, store.policy_dir(policy_hash), mode)

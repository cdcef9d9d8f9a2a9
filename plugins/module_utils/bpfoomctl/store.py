# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's state on disk, under one root directory (STATE_DIR on a host, a temporary one in tests):
the stored policies by hash, the desired one (what boot re-applies), the last known good ones, the lock."""

from __future__ import annotations

import fcntl
import json
import os
import stat

from .contract import STATE_DIR, ExitCode, Failure

POLICY_FILES = ("policy.bpf.o", "manifest.json")
GOOD_KEPT = 5
SHADOW_SUFFIX = "-shadow"           # the key of a policy in shadow mode (bpffs refuses dots in names)


def pin_key(policy_hash, mode):
    """What names a policy in a mode, in the state files and in bpffs (PIN_ROOT/<key>): its hash, with
    SHADOW_SUFFIX in shadow mode. The same policy in both modes is two keys: a switch is make-before-break."""
    return policy_hash + (SHADOW_SUFFIX if mode == "shadow" else "")


def split_key(key):
    """(policy hash, mode) of a key."""
    if key.endswith(SHADOW_SUFFIX):
        return key[:-len(SHADOW_SUFFIX)], "shadow"
    return key, "enforce"


def check_safe(path, what="load a policy others could have replaced"):
    """Refuse a file or directory that others could have written (up to /; a symbolic link's own mode means
    nothing, its target is checked as well)."""
    current = os.path.abspath(path)
    while True:
        info = os.lstat(current)
        if info.st_mode & 0o002 and not stat.S_ISLNK(info.st_mode):
            raise Failure(ExitCode.UNSAFE_PATH,
                          f"{current} is world-writable: refusing to {what} (fix with chmod o-w {current})")
        if info.st_uid != 0 and current != "/":
            raise Failure(ExitCode.UNSAFE_PATH, f"{current} is not owned by root: refusing to {what}")
        if current == "/":
            break
        current = os.path.dirname(current)
    if os.path.realpath(path) != os.path.abspath(path):
        check_safe(os.path.realpath(path), what)


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


def remove_flat_dir(path):
    """Remove a directory of plain entries (a policy's pins, a stored copy), if it is there."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


def read_manifest(policy_dir, check=check_safe):
    """A built policy's manifest, once its object matches it; check refuses files others could have written."""
    obj, manifest_path = (os.path.join(policy_dir, name) for name in POLICY_FILES)
    for path in (obj, manifest_path):
        if not os.path.isfile(path):
            raise Failure(ExitCode.FAILED, f"{path} is missing: copy the policy built by bpfoom.fleet.policy_build")
        check(path)
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    try:
        from _sha256 import sha256  # the built-in module: no OpenSSL to load at start-up
    except ImportError:
        from hashlib import sha256
    with open(obj, "rb") as handle:
        actual = sha256(handle.read()).hexdigest()
    if actual != manifest.get("object_sha256"):
        raise Failure(ExitCode.MISMATCH, f"{obj} has sha256 {actual}, its manifest says {manifest.get('object_sha256')}: "
                                         "refusing it; rebuild and copy the policy again")
    return manifest


class Lock:
    """One apply, detach or rollback at a time on this host."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class Store:
    """The state under root. Keys name a policy in a mode (pins.pin_key); check is the safety check of every
    file the agent loads (tests under /tmp, world-writable, give their own)."""

    def __init__(self, root=STATE_DIR, check=check_safe):
        self.root, self.check = root, check
        self.policies = os.path.join(root, "policies")
        self.desired_file = os.path.join(root, "desired")           # the key of the policy to run
        self.good_file = os.path.join(root, "last-known-good")      # keys that verified, newest last

    def lock(self):
        return Lock(os.path.join(self.root, "lock"))

    def writes(self, path):
        """Whether an OSError on path is this store's (a full or read-only state directory)."""
        return bool(path) and str(path).startswith(self.root)

    def _read(self, path):
        try:
            with open(path) as handle:
                return handle.read().strip() or None
        except FileNotFoundError:
            return None

    def _write(self, path, text):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        replace_file(path, text + "\n")

    def desired(self):
        return self._read(self.desired_file)

    def set_desired(self, key):
        self._write(self.desired_file, key)

    def forget_desired(self):
        if os.path.exists(self.desired_file):
            os.unlink(self.desired_file)

    def good(self):
        text = self._read(self.good_file)
        return text.split() if text else []

    def remember_good(self, key):
        good = [other for other in self.good() if other != key] + [key]
        self._write(self.good_file, " ".join(good[-GOOD_KEPT:]))

    def policy_dir(self, policy_hash):
        return os.path.join(self.policies, policy_hash)

    def manifest(self, policy_dir):
        return read_manifest(policy_dir, self.check)

    def stored_manifest(self, key):
        """The manifest of the policy stored for key, checked against its object."""
        return self.manifest(self.policy_dir(split_key(key)[0]))

    def keep(self, policy_dir, manifest):
        """Keep the policy (by hash): boot and rollback re-apply it from here. Returns its stored directory."""
        target = self.policy_dir(manifest["hash"])
        if os.path.abspath(policy_dir) == target:
            return target
        os.makedirs(self.policies, mode=0o700, exist_ok=True)
        staging = target + ".new"
        remove_flat_dir(staging)
        try:
            os.makedirs(staging, mode=0o700)
            for name in POLICY_FILES:
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

    def stored_name(self, policy_hash):
        """The name in a stored policy's manifest, or None (a damaged copy: apply refuses it naming its file)."""
        try:
            with open(os.path.join(self.policy_dir(policy_hash), "manifest.json")) as handle:
                return json.load(handle)["name"]
        except (OSError, ValueError, KeyError):
            return None

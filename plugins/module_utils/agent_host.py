# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host side of the modules: what this host can run, and the agent's files, unit, bpffs and service.

One remote execution converges all of it (the modules bpfoom.fleet.policy
and bpfoom.fleet.agent): the action plugin sends the agent's files in the
module's arguments; this code compares checksums with what the host has,
writes only what differs, and touches systemd only when something is off.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import tempfile

BPFOOMCTL = "/usr/local/sbin/bpfoomctl"
UNIT = "bpfoom.service"
STATE_DIR = "/var/lib/bpfoom"
BPFFS = "/sys/fs/bpf"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
HOOK_FUNCTIONS = ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name")
HOOK_MISSING_RC = 3
# The agent's files: where each goes and with which mode (root-owned). The controller side
# (plugins/plugin_utils/agent_payload.py) reads or renders them from roles/agent/.
AGENT_FILES = {
    "bpfoomctl.py": ("/usr/local/lib/bpfoom/bpfoomctl.py", 0o644),
    "bpfoomctl": (BPFOOMCTL, 0o755),
    "bpfoom.service": ("/etc/systemd/system/bpfoom.service", 0o644),
}
DIRECTORIES = (("/usr/local/lib/bpfoom", 0o755), (STATE_DIR, 0o700))
PACKAGE_MANAGERS = (("apt", "/usr/bin/apt-get"), ("dnf", "/usr/bin/dnf"), ("yum", "/usr/bin/yum"),
                    ("zypper", "/usr/bin/zypper"))
C_LOCALE = {"LANG": "C", "LC_ALL": "C"}
# The agent's options (the role's agent_* variables without the prefix; roles/agent/defaults/main.yml mirrors
# the defaults, a unit test keeps them in step) and the files the action plugin sends.
AGENT_OPTIONS = dict(oom_score_adj=dict(type="int", default=-900), restart_sec=dict(type="int", default=2),
                     metrics_file=dict(type="str", default="/var/lib/prometheus/node-exporter/bpfoom.prom"))
AGENT_SPEC = dict(agent=dict(type="dict", options=AGENT_OPTIONS), agent_files=dict(type="dict"))


# --- what the host is -------------------------------------------------------

def btf_hook_functions():
    """Which hook functions the kernel's BTF names, without libbpf (it may not be installed yet).

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
        return any(line.split()[1:3] == [BPFFS, "bpf"] for line in mounts)


def libbpf_version():
    """The version of libbpf.so.1, or None when the host lacks it."""
    try:
        lib = ctypes.CDLL("libbpf.so.1")
        return f"{lib.libbpf_major_version()}.{lib.libbpf_minor_version()}"
    except (OSError, AttributeError):
        return None


def package_manager():
    """The package manager a playbook should install libbpf with (ansible.builtin.package's `use`)."""
    return next((name for name, path in PACKAGE_MANAGERS if os.path.exists(path)), None)


def agent_installed():
    return os.path.exists(BPFOOMCTL)


def host_facts():
    functions = btf_hook_functions()
    return {"kernel_release": os.uname().release, "hook": all(functions.values()), "hook_functions": functions,
            "bpffs": bpffs_mounted(), "libbpf_version": libbpf_version()}


def missing_hook_message(facts):
    missing = [name for name, present in facts["hook_functions"].items() if not present]
    return (f"the kernel {facts['kernel_release']} has no BPF OOM hook ({', '.join(missing)} not in its BTF): "
            "boot a kernel carrying the bpf_oom_evaluate_task series, or leave this host out")


def libbpf_missing_message():
    return ("libbpf.so.1 is missing: install libbpf1 (Debian), libbpf (RPM distributions); the rollout installs "
            "it when agent_manage_packages is true")


# --- the agent's files and service ----------------------------------------

def sha256_file(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def _file_differs(name, content):
    path, mode = AGENT_FILES[name]
    if sha256_file(path) != hashlib.sha256(content).hexdigest():
        return True
    info = os.stat(path)
    return (info.st_mode & 0o7777, info.st_uid, info.st_gid) != (mode, 0, 0)


def write_file(module, path, content, mode):
    """Atomically, root-owned, with its mode: a reader sees the old file or the new one."""
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(prefix=".bpfoom-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        os.chmod(temporary, mode)
        os.chown(temporary, 0, 0)
        module.atomic_move(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    # atomic_move gives a file that did not exist before the default mode (0666 & ~umask): set ours again.
    os.chmod(path, mode)


def decode_files(encoded):
    """{name: base64 text} as the action plugin sends them -> {name: bytes}."""
    return {name: base64.b64decode(text) for name, text in (encoded or {}).items()}


class AgentHost:
    """Converge the agent on this host: files, systemd unit, bpffs, service enabled and running."""

    def __init__(self, module):
        self.module = module
        self.systemctl = module.get_bin_path("systemctl")

    def _systemctl(self, *args, check=True):
        if not self.systemctl:
            self.module.fail_json(msg="systemctl not found: the bpfoom agent needs systemd")
        rc, out, err = self.module.run_command([self.systemctl, *args], environ_update=C_LOCALE)
        if check and rc != 0:
            self.module.fail_json(msg=f"systemctl {' '.join(args)} failed (rc={rc}): {err.strip() or out.strip()}")
        return rc, out.strip()

    def plan(self, files):
        """What converging would change: the files that differ (by name), and the service and bpffs steps."""
        changed = [name for name, content in files.items() if _file_differs(name, content)]
        installed = os.path.exists(AGENT_FILES["bpfoom.service"][0])
        enabled = installed and self._systemctl("is-enabled", UNIT, check=False)[0] == 0
        active = installed and self._systemctl("is-active", UNIT, check=False)[0] == 0
        return {
            "files": changed,
            "digests_before": {name: sha256_file(AGENT_FILES[name][0]) for name in changed},
            "unit_changed": "bpfoom.service" in changed,
            "enable": not enabled,
            "start": not active,
            # A new program, or a new unit (its sandbox), is picked up by a restart; a restart keeps the
            # policy attached.
            "restart": active and bool(set(changed) & {"bpfoomctl.py", "bpfoomctl", "bpfoom.service"}),
            "mount_bpffs": not bpffs_mounted(),
        }

    def apply(self, files, plan):
        for directory, mode in DIRECTORIES:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=mode)
            os.chmod(directory, mode)
        for name in plan["files"]:
            path, mode = AGENT_FILES[name]
            write_file(self.module, path, files[name], mode)
        if plan["mount_bpffs"]:
            # ansible.posix.mount would write fstab; systemd mounts bpffs itself at boot.
            rc, _out, err = self.module.run_command(["mount", "-t", "bpf", "bpf", BPFFS])
            if rc != 0:
                self.module.fail_json(msg=f"mounting bpffs on {BPFFS} failed: {err.strip()}")
        if plan["unit_changed"]:
            self._systemctl("daemon-reload")
        if plan["enable"]:
            self._systemctl("enable", UNIT)
        if plan["start"]:
            self._systemctl("start", UNIT)
        elif plan["restart"]:
            self._systemctl("restart", UNIT)

    def converge(self, files, check_mode):
        """Plan, then (outside check mode) act. Returns the plan as the modules report it: the paths of the
        files that change, each one's checksum before and after (for diff mode), and the service steps."""
        plan = self.plan(files)
        changed = bool(plan["files"] or plan["enable"] or plan["start"] or plan["restart"] or plan["mount_bpffs"])
        if changed and not check_mode:
            self.apply(files, plan)
        names, before = plan.pop("files"), plan.pop("digests_before")
        return dict(plan, changed=changed, files_changed=[AGENT_FILES[name][0] for name in names],
                    digests={AGENT_FILES[name][0]: (before[name], hashlib.sha256(files[name]).hexdigest())
                             for name in names})


# --- the agent's own answers -------------------------------------------------

def run_bpfoomctl(module, *args, result=None):
    """Run bpfoomctl; return its JSON result, or fail the task with its message (and what was done so far)."""
    if not os.path.exists(BPFOOMCTL):
        module.fail_json(msg=f"{BPFOOMCTL} is not installed: apply the bpfoom.fleet.agent role first")
    rc, out, err = module.run_command([BPFOOMCTL, *args], environ_update=C_LOCALE)
    try:
        answer = json.loads(out)
    except ValueError:
        module.fail_json(msg=f"bpfoomctl {' '.join(args)} failed (rc={rc}): {err.strip() or out.strip()}", rc=rc,
                         **(result or {}))
    if rc != 0 or answer.get("failed"):
        module.fail_json(**dict(result or {}, msg=answer.get("msg") or err.strip(), rc=rc,
                                hook_missing=rc == HOOK_MISSING_RC))
    return answer


def policy_identity(status):
    """name, hash and mode of the policy the agent keeps attached, or None."""
    attached = (status or {}).get("attached_policy")
    return {"policy_name": attached["policy_name"], "policy_hash": attached["policy_hash"],
            "mode": attached.get("mode", "enforce")} if attached else None

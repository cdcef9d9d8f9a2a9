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
import hashlib
import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import kernel, libbpf
from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl.contract import (
    BPFFS, CATALOG, CATALOG_FILE, COMMAND, HOOK_FUNCTIONS, LIB_DIR, OLD_LAYOUT, PACKAGE_DIR, STATE_DIR, UNIT, UNIT_FILE,
    ExitCode)

SHIM = "bpfoomctl"                       # the agent's files by the names the action plugin sends them
UNIT_NAME = UNIT
PACKAGE_PREFIX = "bpfoomctl/"            # the package's modules: bpfoomctl/<module>.py
DIRECTORIES = ((LIB_DIR, 0o755), (PACKAGE_DIR, 0o755), (STATE_DIR, 0o700))
PACKAGE_MANAGERS = (("apt", "/usr/bin/apt-get"), ("dnf", "/usr/bin/dnf"), ("yum", "/usr/bin/yum"),
                    ("zypper", "/usr/bin/zypper"))
C_LOCALE = {"LANG": "C", "LC_ALL": "C"}
# The unit file states for which systemctl is-enabled succeeds, and the active states for which is-active does.
ENABLED_STATES = ("enabled", "enabled-runtime", "static", "indirect", "generated", "transient", "alias")
ACTIVE_STATES = ("active", "reloading")
# The agent's options (the role's agent_* variables without the prefix; roles/agent/defaults/main.yml mirrors
# the defaults, a unit test keeps them in step) and the files the action plugin sends.
AGENT_OPTIONS = dict(oom_score_adj=dict(type="int", default=-900), restart_sec=dict(type="int", default=2),
                     metrics_file=dict(type="str", default="/var/lib/prometheus/node-exporter/bpfoom.prom"))
AGENT_SPEC = dict(agent=dict(type="dict", options=AGENT_OPTIONS), agent_files=dict(type="dict"))


class PayloadModule(AnsibleModule):
    """The AnsibleModule of a module that receives the agent's files (and a policy's object) in its arguments: its
    result's invocation keeps their names and sizes, not their contents. Ansible would send every argument back
    (about 250 KB a host), and the controller would keep it in each registered result for the rest of the play
    (300 MB at 1,000 hosts), transform it for every callback, print it with -v and keep it in AWX's job events."""

    def exit_json(self, **kwargs):
        super().exit_json(**self._with_invocation(kwargs))

    def fail_json(self, msg, **kwargs):
        super().fail_json(msg, **self._with_invocation(kwargs))

    def _with_invocation(self, kwargs):
        return dict(kwargs, invocation={"module_args": without_payload(self.params)})


def without_payload(params):
    """The module's arguments with the agent's files, the policy's object and its manifest as their sizes (the
    manifest is in the controller's build result, which names the policy by the same hash)."""
    kept = dict(params)
    if isinstance(kept.get("agent_files"), dict):
        kept["agent_files"] = {name: f"({len(content)} characters of base64, left out)"
                               for name, content in kept["agent_files"].items()}
    if isinstance(kept.get("policy_object"), str):
        kept["policy_object"] = f"({len(kept['policy_object'])} characters of base64, left out)"
    if isinstance(kept.get("manifest"), dict):
        kept["manifest"] = f"(policy {str(kept['manifest'].get('hash'))[:12]}'s manifest, left out)"
    return kept


def install_path(name):
    """Where an agent file goes, and with which mode (root-owned)."""
    if name == SHIM:
        return COMMAND, 0o755
    if name == UNIT_NAME:
        return UNIT_FILE, 0o644
    if name == CATALOG:
        return CATALOG_FILE, 0o644
    module = name[len(PACKAGE_PREFIX):]
    if not name.startswith(PACKAGE_PREFIX) or not module.endswith(".py") or "/" in module or module.startswith("."):
        raise ValueError(f"agent file {name!r} has no place on the host")
    return os.path.join(PACKAGE_DIR, module), 0o644


def under(root, path):
    """path on the host whose / is root (a temporary one in tests)."""
    return os.path.join(root, path.lstrip("/"))


def stale_paths(files, root="/"):
    """What an agent install leaves that this one does not have: an older layout's files, a module of the package
    that is gone (its compiled bytecode goes with the cache)."""
    stale = [under(root, path) for path in OLD_LAYOUT if os.path.lexists(under(root, path))]
    package_dir = under(root, PACKAGE_DIR)
    if os.path.isdir(package_dir):
        wanted = {under(root, install_path(name)[0]) for name in files}
        stale += [os.path.join(package_dir, entry) for entry in sorted(os.listdir(package_dir))
                  if entry.endswith(".py") and os.path.join(package_dir, entry) not in wanted]
    return stale


# --- what the host is -------------------------------------------------------

def btf_hook_functions():
    """Which hook functions the kernel's BTF names, without libbpf (it may not be installed yet)."""
    return kernel.btf_names(HOOK_FUNCTIONS) or {name: False for name in HOOK_FUNCTIONS}


def libbpf_version():
    """The version of libbpf.so.1 as text, or None when the host lacks it."""
    version = libbpf.version()
    return "%d.%d" % version if version else None


def package_manager():
    """The package manager a playbook should install libbpf with (ansible.builtin.package's `use`)."""
    return next((name for name, path in PACKAGE_MANAGERS if os.path.exists(path)), None)


# libbpf.so.1's package per package manager: Debian's name with apt, the RPM distributions' with every other.
LIBBPF_PACKAGES = {"apt": ["libbpf1"]}


def libbpf_packages(manager):
    """The packages that install libbpf.so.1 with this package manager."""
    return list(LIBBPF_PACKAGES.get(manager, ["libbpf"]))


def agent_installed():
    return os.path.exists(COMMAND)


def host_facts():
    functions = btf_hook_functions()
    return {"kernel_release": os.uname().release, "hook": all(functions.values()), "hook_functions": functions,
            "bpffs": kernel.bpffs_mounted(), "libbpf_version": libbpf_version()}


def missing_hook_message(facts):
    missing = [name for name, present in facts["hook_functions"].items() if not present]
    return (f"the kernel {facts['kernel_release']} has no BPF OOM hook ({', '.join(missing)} not in its BTF): "
            "boot a kernel carrying the bpf_oom_evaluate_task series, leave this host out, or run the policy there in "
            "shadow mode (unpatched=shadow; in the rollout, bpfoom_unpatched_hosts=shadow, or =skip to leave it as it is)")


def libbpf_missing_message(manager):
    return (f"libbpf.so.1 is missing: install {' '.join(libbpf_packages(manager))} (with {manager or 'the package manager'}); "
            "the rollout and the agent role install it when agent_manage_packages is true")


# --- the agent's files and service ----------------------------------------

def sha256_file(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def _file_differs(path, mode, content):
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
    """Converge the agent on this host: files, systemd unit, bpffs, service enabled and running. root: the host's
    / (a temporary directory in tests)."""

    def __init__(self, module, root="/"):
        self.module, self.root = module, root
        self.systemctl = module.get_bin_path("systemctl")

    def path(self, name):
        """(where an agent file goes under root, its mode)."""
        path, mode = install_path(name)
        return under(self.root, path), mode

    def _systemctl(self, *args, check=True):
        if not self.systemctl:
            self.module.fail_json(msg="systemctl not found: the bpfoom agent needs systemd")
        rc, out, err = self.module.run_command([self.systemctl, *args], environ_update=C_LOCALE)
        if check and rc != 0:
            self.module.fail_json(msg=f"systemctl {' '.join(args)} failed (rc={rc}): {err.strip() or out.strip()}"
                                      + self._unit_says(args))
        return rc, out.strip()

    def _unit_says(self, args):
        """Why the unit did not start, in the agent's own words: systemctl only says "see journalctl"."""
        journalctl = self.module.get_bin_path("journalctl")
        if args[0] not in ("start", "restart") or not journalctl:
            return ""
        _rc, out, _err = self.module.run_command([journalctl, "--unit", UNIT, "--boot", "--lines", "200", "--output",
                                                  "cat", "--no-pager"], environ_update=C_LOCALE)
        lines = out.strip().splitlines()
        # bpfoomctl answers a failure with one JSON line ({"failed": true, "msg": ...}); systemd's own lines follow.
        for line in reversed(lines):
            try:
                answer = json.loads(line) if line.startswith("{") else None
            except ValueError:
                continue
            if isinstance(answer, dict) and answer.get("failed") and answer.get("msg"):
                return f"\nthe agent says (journalctl -u {UNIT}): {answer['msg']}"
        return f"\nthe agent's last words (journalctl -u {UNIT}):\n" + "\n".join(lines[-4:]) if lines else ""

    def unit_state(self):
        """(enabled, active) of the agent's unit, as systemctl is-enabled and is-active would answer, in one
        systemctl call: each systemctl costs a host under emulation half a second, a tenth of an apply."""
        _rc, out = self._systemctl("show", UNIT, "--property=UnitFileState", "--property=ActiveState", check=False)
        state = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return state.get("UnitFileState") in ENABLED_STATES, state.get("ActiveState") in ACTIVE_STATES

    def plan(self, files):
        """What converging would change: the files that differ (by name), and the service and bpffs steps."""
        changed = [name for name, content in files.items() if _file_differs(*self.path(name), content)]
        stale = stale_paths(files, self.root)
        installed = os.path.exists(self.path(UNIT_NAME)[0])
        enabled, active = self.unit_state() if installed else (False, False)
        return {
            "files": changed,
            "stale": stale,
            "digests_before": {name: sha256_file(self.path(name)[0]) for name in changed},
            "unit_changed": UNIT_NAME in changed,
            "catalog_changed": CATALOG in changed,
            "enable": not enabled,
            "start": not active,
            # A new program, or a new unit (its sandbox), is picked up by a restart; a restart keeps the
            # policy attached.
            "restart": active and bool(changed or stale),
            "mount_bpffs": not kernel.bpffs_mounted(),
        }

    def apply(self, files, plan):
        for directory, mode in DIRECTORIES:
            directory = under(self.root, directory)
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=mode)
            os.chmod(directory, mode)
        for name in plan["files"]:
            path, mode = self.path(name)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            write_file(self.module, path, files[name], mode)
        for path in plan["stale"]:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        if plan["mount_bpffs"]:
            # ansible.posix.mount would write fstab; systemd mounts bpffs itself at boot.
            rc, _out, err = self.module.run_command(["mount", "-t", "bpf", "bpf", BPFFS])
            if rc != 0:
                self.module.fail_json(msg=f"mounting bpffs on {BPFFS} failed: {err.strip()}")
        if plan["catalog_changed"]:
            # journalctl -x reads the catalog's index, not the file: index it again. A host without journalctl
            # keeps the file; nothing else needs it.
            journalctl = self.module.get_bin_path("journalctl")
            if journalctl:
                rc, _out, err = self.module.run_command([journalctl, "--update-catalog"], environ_update=C_LOCALE)
                if rc != 0:
                    self.module.fail_json(msg=f"journalctl --update-catalog failed (rc={rc}): {err.strip()}")
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
        changed = bool(plan["files"] or plan["stale"] or plan["enable"] or plan["start"] or plan["restart"] or plan["mount_bpffs"])
        if changed and not check_mode:
            self.apply(files, plan)
        names, before = plan.pop("files"), plan.pop("digests_before")
        stale = plan.pop("stale")
        return dict(plan, changed=changed, files_changed=[self.path(name)[0] for name in names],
                    files_removed=stale,
                    digests={self.path(name)[0]: (before[name], hashlib.sha256(files[name]).hexdigest())
                             for name in names},
                    texts={self.path(name)[0]: (_text_of(self.path(name)[0]), files[name].decode())
                           for name in names if name in DIFF_AS_TEXT})


# Agent files diff mode shows as text, before and after, as ansible.builtin.template shows a file: the unit, whose
# lines an operator sets (RestartSec=, the sandbox), and the journal catalog. The program's files show as checksums.
DIFF_AS_TEXT = (UNIT_NAME, CATALOG)


def _text_of(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def text_diffs(texts):
    """Diff mode's entries of the files converge() returned as texts, one per file, headed by its path."""
    return [{"before_header": path, "after_header": path, "before": before, "after": after}
            for path, (before, after) in texts.items()]


# --- the agent's own answers -------------------------------------------------

def failure_of(rc):
    """What an exit code of bpfoomctl means, by its name in contract.ExitCode (no_hook, no_shadow_points, no_btf,
    verifier, ...), as the modules return it in `agent_failure`."""
    try:
        return ExitCode(rc).name.lower()
    except ValueError:
        return f"rc {rc}"


def run_bpfoomctl(module, *args, result=None):
    """Run bpfoomctl; return its JSON result, or fail the task with its message (and what was done so far)."""
    if not os.path.exists(COMMAND):
        module.fail_json(msg=f"{COMMAND} is not installed: apply the bpfoom.fleet.agent role first")
    rc, out, err = module.run_command([COMMAND, *args], environ_update=C_LOCALE)
    try:
        answer = json.loads(out)
    except ValueError:
        module.fail_json(msg=f"bpfoomctl {' '.join(args)} failed (rc={rc}): {err.strip() or out.strip()}", rc=rc,
                         agent_failure=failure_of(rc), **(result or {}))
    if rc != 0 or answer.get("failed"):
        module.fail_json(**dict(result or {}, msg=answer.get("msg") or err.strip(), rc=rc,
                                agent_failure=failure_of(rc), hook_missing=rc == ExitCode.NO_HOOK))
    return answer


def policy_identity(status):
    """name, hash and mode of the policy the agent keeps attached, or None."""
    attached = (status or {}).get("attached_policy")
    return {"policy_name": attached["policy_name"], "policy_hash": attached["policy_hash"],
            "mode": attached.get("mode", "enforce")} if attached else None

"""Controllers of other ansible-core releases: a Debian trixie root (Python 3.13) with one virtual environment
per release, for the releases this machine's Python 3.11 cannot run (ansible-core 2.20 and newer need 3.12).

The root is a directory made by mmdebstrap from the machine's own apt sources, as the host image is, with
what a controller of this collection needs (clang and libbpf's headers compile the policies, ssh reaches the
hosts). A command runs in it through chroot, in a mount namespace of its own that shows this checkout, the
lab's cache and /tmp at their own paths, so paths mean the same inside and out, and ssh reaches the lab's
loopback ports (chroot keeps the network). Each entry is cached by content: the root by its packages, each
virtual environment by its pins.
"""

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .common import (REPO_ROOT, LabError, cache_dir, content_key, elapsed, ensure_apt_packages, locked, read_json,
                     say, write_json)
from .image import machine_apt_sources

SUITE = "trixie"
PACKAGES = ["python3", "python3-venv", "ca-certificates", "openssh-client", "clang", "libbpf-dev", "libc6-dev",
            "git", "make"]
# The releases the matrix runs beyond the machine's own venv (requirements-dev.txt: 2.19), each with the test
# tools the unit tier needs. 2.22 is a release candidate on PyPI as of this writing.
CORES = {
    "2.20": ["ansible-core==2.20.10"],
    "2.21": ["ansible-core==2.21.5"],
    "2.22": ["ansible-core==2.22.0rc1"],
}
TEST_TOOLS = ["pytest==9.2.0", "prometheus-client==0.26.0", "ansible-runner==2.4.3"]
# The newest stable release: the lab's playbooks run on it (BPFOOM_TEST_CONTROLLER, tests/policytools.py).
NEWEST_STABLE = "2.21"
BUILD_DEPENDENCIES = {"mmdebstrap": "mmdebstrap", "unshare": "util-linux"}


def root() -> Path:
    """The trixie root directory, built when missing or when its package list changed."""
    entry = cache_dir() / "controller" / content_key(SUITE, " ".join(PACKAGES), "root-v1")
    with locked(cache_dir() / "controller" / "build.lock"):
        if read_json(entry / "meta.json") is None:
            _build_root(entry)
    return entry / "root"


def _build_root(entry: Path) -> None:
    ensure_apt_packages(BUILD_DEPENDENCIES)
    start = time.monotonic()
    work = entry.with_name(entry.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "sources.list").write_text(machine_apt_sources(SUITE))
    say(f"building the {SUITE} controller root with mmdebstrap (log: {work / 'mmdebstrap.log'})")
    command = ["mmdebstrap", "--variant=minbase", "--format=directory", "--mode=root",
               f"--include={','.join(PACKAGES)}",
               "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/locale/*",
               SUITE, str(work / "root"), str(work / "sources.list")]
    with open(work / "mmdebstrap.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "".join((work / "mmdebstrap.log").read_text().splitlines(keepends=True)[-20:])
        raise LabError(f"mmdebstrap failed (log: {work / 'mmdebstrap.log'}):\n{tail}")
    python = subprocess.run(["chroot", str(work / "root"), "python3", "--version"], capture_output=True, text=True,
                            check=True).stdout.split()[-1]
    write_json(work / "meta.json", {"suite": SUITE, "packages": PACKAGES, "python": python,
                                    "build_seconds": round(time.monotonic() - start)})
    work.rename(entry)
    say(f"controller root built in {elapsed(start)} (Python {python})")


def venv(core: str) -> str:
    """The path, inside the root, of the virtual environment of ansible-core CORE (built when missing)."""
    if core not in CORES:
        raise LabError(f"no controller for ansible-core {core!r}: choose one of {', '.join(CORES)}")
    requirements = CORES[core] + TEST_TOOLS
    inside = f"/opt/venv-{core}-{content_key(*requirements)}"
    tree = root()
    with locked(cache_dir() / "controller" / f"venv-{core}.lock"):
        if not (tree / inside.lstrip("/") / ".installed").exists():
            start = time.monotonic()
            say(f"installing {' '.join(requirements)} in the {SUITE} controller ({inside})")
            shutil.rmtree(tree / inside.lstrip("/"), ignore_errors=True)
            _chroot(tree, ["sh", "-ec", f"python3 -m venv {inside} && {inside}/bin/pip install -q "
                                        f"--disable-pip-version-check {' '.join(map(shlex.quote, requirements))} "
                                        f"&& touch {inside}/.installed"], env={"PIP_DEFAULT_TIMEOUT": "180"})
            say(f"ansible-core {core} controller ready in {elapsed(start)}")
    return inside


def exec_in(core: str, argv: list, cwd: str = None) -> None:
    """Become ARGV on the controller of ansible-core CORE, in CWD (this process's by default).

    This process is replaced, not a parent that waits: a signal (a test's Ctrl-C, a timeout's kill) reaches
    ansible-playbook itself, as when it runs on this machine.
    """
    inside = venv(core)
    env = {"PATH": f"{inside}/bin:/usr/local/bin:/usr/bin:/bin", "VIRTUAL_ENV": inside}
    command, variables = _chroot_command(root(), argv, binds=_shared_paths(), cwd=cwd or os.getcwd(), env=env)
    os.execvpe(command[0], command, variables)


def _shared_paths() -> list:
    """What the controller sees at the same path as this machine: the checkout, the cache, /tmp."""
    paths = [REPO_ROOT, cache_dir(), Path("/tmp")]
    lab = os.environ.get("BPFOOM_LAB_DIR") or os.environ.get("BPFOOM_TEST_LAB_DIR")
    if lab:
        paths.append(Path(lab))
    return [str(p.resolve()) for p in paths if p.exists()]


def _chroot(tree: Path, argv: list, env: dict = None) -> None:
    command, variables = _chroot_command(tree, argv, binds=[], env=env)
    result = subprocess.run(command, env=variables, check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed in the {SUITE} controller root {tree} (status {result.returncode})")


def _chroot_command(tree: Path, argv: list, binds: list, cwd: str = "/", env: dict = None):
    """The command and environment that run ARGV in TREE, with BINDS at their own paths."""
    # pip (the venvs, ansible-test's requirements) reaches PyPI from the root as it does from this machine: same
    # resolver, same trusted CAs.
    shutil.copy("/etc/resolv.conf", tree / "etc" / "resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", tree / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    # The mounts live in a namespace of their own: they go away with the command, whatever its outcome.
    mounts = [f"mount --rbind /dev {tree}/dev", f"mount -t proc proc {tree}/proc", f"mount --rbind /sys {tree}/sys"]
    for path in binds:
        mounts += [f"mkdir -p {tree}{path}", f"mount --bind {path} {tree}{path}"]
    # This machine's environment goes in (ANSIBLE_*, BPFOOM_*), but for its pip settings, which name its own
    # wheel folders and constraints.
    variables = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    inside = " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items())
    script = " && ".join(mounts) + f" && exec {shutil.which('chroot')} {tree} /usr/bin/env {inside} " \
        + f"sh -c 'cd \"$0\" && exec \"$@\"' {shlex.quote(cwd)} " + " ".join(map(shlex.quote, argv))
    return [shutil.which("unshare"), "--mount", "--propagation", "private", "sh", "-ec", script], variables

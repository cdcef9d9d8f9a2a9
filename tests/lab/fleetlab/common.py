"""What every lab step shares: where things live, content hashes, progress, errors."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

LAB_ROOT = Path(__file__).resolve().parent.parent          # tests/lab
REPO_ROOT = LAB_ROOT.parent.parent


class LabError(Exception):
    """A failure the user can act on: the message says what and what to do."""


def cache_dir() -> Path:
    """Build outputs (kernels, host images), shared by every checkout of the user."""
    path = Path(os.environ.get("BPFOOM_LAB_CACHE", Path.home() / ".cache" / "bpfoom-lab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def lab_dir() -> Path:
    """Runtime state of one fleet (overlays, PID files, logs, SSH key, inventory).

    Per checkout by default; tests point BPFOOM_LAB_DIR elsewhere so that their
    fleet never touches the one a developer has up.
    """
    path = Path(os.environ.get("BPFOOM_LAB_DIR", REPO_ROOT / ".lab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def other_lab(path: Path):
    """Point every lab function at another lab directory for a while: a test's second fleet."""
    before = os.environ.get("BPFOOM_LAB_DIR")
    os.environ["BPFOOM_LAB_DIR"] = str(path)
    try:
        yield
    finally:
        if before is None:
            del os.environ["BPFOOM_LAB_DIR"]
        else:
            os.environ["BPFOOM_LAB_DIR"] = before


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_key(*parts) -> str:
    """A short key over strings, bytes and files: the name of a cache entry."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            part = part.read_bytes()
        if isinstance(part, str):
            part = part.encode()
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def say(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


def elapsed(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60}m{seconds % 60:02d}s"


@contextmanager
def locked(path: Path):
    """Serialize builds of one cache entry across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_artifact_ok(entry: Path, artifact: str) -> bool:
    """True if the cache entry holds `artifact` with the sha256 recorded at build time.

    An entry whose artifact no longer matches (corrupted, truncated) is removed,
    so the caller rebuilds it instead of booting it.
    """
    meta = read_json(entry / "meta.json")
    if meta is None:
        return False
    if (entry / artifact).exists() and sha256_file(entry / artifact) == meta["sha256"]:
        return True
    say(f"cached {entry / artifact} does not match its recorded sha256: rebuilding it")
    shutil.rmtree(entry)
    return False


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def write_json(path: Path, data) -> None:
    """Write through a temporary file so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def ensure_apt_packages(packages: dict) -> None:
    """Install missing Debian packages; `packages` maps a command or file to its package."""
    missing = sorted({pkg for probe, pkg in packages.items() if not _present(probe)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise LabError(f"missing packages {' '.join(missing)}: run `apt-get install {' '.join(missing)}` as root")
    say(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env,
                                capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"apt-get install {' '.join(missing)} failed:\n{result.stderr[-2000:]}")


def _present(probe: str) -> bool:
    if probe.startswith("/"):
        return Path(probe).exists()
    from shutil import which
    return which(probe) is not None

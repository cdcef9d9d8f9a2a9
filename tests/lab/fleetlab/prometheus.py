"""Prometheus' own binaries (promtool, prometheus) from Debian's `prometheus` package, unpacked, not installed.

Installing the package would enable and start a Prometheus server on the machine (Debian starts the
services it installs); the tests need the binaries only: promtool checks and tests the shipped rules,
and the lab's metrics test runs a server of its own, by PID, on a loopback port. So the package is
downloaded (apt-get download, from the machine's own apt sources) and unpacked into the cache, keyed
by its version.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from .common import LabError, cache_dir, locked, say

PACKAGE = "prometheus"


def candidate_version() -> str:
    policy = subprocess.run(["apt-cache", "policy", PACKAGE], capture_output=True, text=True, check=False).stdout
    version = next((line.split()[1] for line in policy.splitlines() if line.strip().startswith("Candidate:")), "")
    if not version or version == "(none)":
        raise LabError(f"apt knows no {PACKAGE} package: run `apt-get update` (the machine's own sources)")
    return version


def binaries() -> Path:
    """The directory holding promtool and prometheus, unpacked once per package version."""
    entry = cache_dir() / f"prometheus-{candidate_version().replace(':', '_')}"
    with locked(entry.with_suffix(".lock")):
        if (entry / "promtool").exists() and (entry / "prometheus").exists():
            return entry
        say(f"unpacking Debian's {PACKAGE} {candidate_version()} into {entry}")
        with tempfile.TemporaryDirectory() as work:
            download = subprocess.run(["apt-get", "download", "-q", PACKAGE], cwd=work, capture_output=True,
                                      text=True, check=False)
            if download.returncode != 0:
                raise LabError(f"apt-get download {PACKAGE} failed:\n{download.stderr[-2000:]}")
            deb = next(Path(work).glob(f"{PACKAGE}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{work}/root"], check=True)
            partial = entry.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for name in ("promtool", "prometheus"):
                shutil.copy2(f"{work}/root/usr/bin/{name}", partial / name)
            shutil.rmtree(entry, ignore_errors=True)
            partial.rename(entry)
    return entry

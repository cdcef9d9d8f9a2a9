"""The lab's kernels: two built from Debian's linux-source-6.12, cached by content, and Debian's own.

Two variants come from one source tree: `patched` carries the BPF OOM hook
(kernel/0001-*.patch), `unpatched` is the same source and config without it.
A variant is rebuilt only when its key (source version, patch, config, this
recipe) changes; the tree is kept between builds, so switching variants is an
incremental build.
The stock kernels (STOCK_KERNELS) are Debian 12's own packages, full
distribution configuration, modules and initramfs, installed in the `stock`
host image (fleetlab.image): the kernels a fleet without the hook really runs.
"""

import functools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .common import (LAB_ROOT, REPO_ROOT, LabError, cache_dir, cached_artifact_ok, content_key, elapsed,
                     ensure_apt_packages, locked, read_json, say, sha256_file, write_json)

SOURCE_PACKAGE = "linux-source-6.12"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
KERNEL_DIR = LAB_ROOT / "kernel"
CONFIG_FRAGMENT = KERNEL_DIR / "lab.config"
# The hook ships with the collection (kernel/, GPL-2.0): the lab builds the patch users build.
HOOK_PATCH = REPO_ROOT / "kernel" / "0001-mm-bpf-oom-policy-hooks.patch"
VARIANTS = {"patched": HOOK_PATCH, "unpatched": None}
# Debian 12's kernels, by lab name: its own 6.1 and its 6.12 (bookworm carries both). Their hosts boot the
# `stock` image, which holds their modules.
STOCK_KERNELS = {"debian61": "6.1", "debian612": "6.12"}
_STOCK_PACKAGE = {"6.1": re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64$"),
                  "6.12": re.compile(r"^linux-image-6\.12\.(\d+)\+deb12-amd64$")}
STOCK_IMAGE = "stock"
BUILD_DEPENDENCIES = {
    "make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc",
    "pahole": "dwarves", "patch": "patch", "cpio": "cpio", "xz": "xz-utils",
    "/usr/include/libelf.h": "libelf-dev", "/usr/include/openssl/ssl.h": "libssl-dev",
    str(SOURCE_TARBALL): SOURCE_PACKAGE,
}
# Every step of a kernel build prints one line such as "  CC      mm/oom_kill.o".
_STEP = re.compile(r"^  [A-Z][A-Z0-9_]* ")


def source_version() -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", SOURCE_PACKAGE],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else "missing"


def variant_key(variant: str) -> str:
    patch = VARIANTS[variant]
    return content_key(variant, source_version(), CONFIG_FRAGMENT, Path(__file__),
                       patch if patch else b"no patch")


def kernel_image(variant: str = "patched") -> Path:
    """Path of the variant's bzImage, built (or rebuilt if corrupted) when needed."""
    if variant in STOCK_KERNELS:
        return _stock_boot_file(variant, "vmlinuz")
    if variant not in VARIANTS:
        raise LabError(f"unknown kernel variant {variant!r}: choose one of {', '.join([*VARIANTS, *STOCK_KERNELS])}")
    ensure_apt_packages({str(SOURCE_TARBALL): SOURCE_PACKAGE})
    out = cache_dir() / "kernel" / f"{variant}-{variant_key(variant)}"
    with locked(cache_dir() / "kernel" / "build.lock"):
        if cached_artifact_ok(out, "bzImage"):
            return out / "bzImage"
        _build(variant, out)
    return out / "bzImage"


def kernel_initrd(variant: str):
    """The initramfs a variant boots with: a stock kernel's own (it loads the modules of its disk); None for ours."""
    return _stock_boot_file(variant, "initrd.img") if variant in STOCK_KERNELS else None


@functools.lru_cache(maxsize=None)
def stock_package(version: str) -> str:
    """The newest linux-image package of Debian's VERSION (6.1, 6.12) in this machine's apt lists.

    Asked once per process: every image key, boot file and release of a stock kernel goes through it."""
    for attempt in range(2):
        names = subprocess.run(["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True,
                               check=False).stdout.split()
        found = [(int(m[1]), name) for name in names if (m := _STOCK_PACKAGE[version].match(name))]
        if found:
            return max(found)[1]
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
    raise LabError(f"no linux-image-{version} package of Debian 12 in this machine's apt lists "
                   f"(pattern {_STOCK_PACKAGE[version].pattern}): the stock kernels come from them")


def _stock_boot_file(variant: str, prefix: str) -> Path:
    from .image import base_image, image_dir  # the stock image holds the kernel's modules: built first
    path = image_dir(STOCK_IMAGE) / "boot" / f"{prefix}-{kernel_release(variant)}"
    if not path.exists():           # else the image is there: the fleet verifies it once, as it boots it
        base_image(STOCK_IMAGE)
    if not path.exists():
        raise LabError(f"{path} is missing: the {STOCK_IMAGE} image was built without {variant}'s kernel; "
                       f"remove {image_dir(STOCK_IMAGE)} to rebuild it")
    return path


def kernel_release(variant: str) -> str:
    if variant in STOCK_KERNELS:
        return stock_package(STOCK_KERNELS[variant]).removeprefix("linux-image-")
    meta = read_json(cache_dir() / "kernel" / f"{variant}-{variant_key(variant)}" / "meta.json", {})
    return meta.get("release", "unknown")


def _build(variant: str, out: Path) -> None:
    ensure_apt_packages(BUILD_DEPENDENCIES)
    start = time.monotonic()
    tree = _source_tree()
    _set_patch(tree, VARIANTS[variant])
    _configure(tree)
    localversion = "-bpfoom" if VARIANTS[variant] else "-unpatched"
    log = out.parent / f"build-{variant}.log"
    say(f"building the {variant} kernel (log: {log})")
    _make(tree, ["bzImage", f"LOCALVERSION={localversion}"], log)
    release = subprocess.run(["make", "-s", "ARCH=x86_64", f"LOCALVERSION={localversion}",
                              "kernelrelease"], cwd=tree, capture_output=True, text=True, check=False).stdout.strip()
    out.mkdir(parents=True)
    shutil.copy2(tree / "arch/x86/boot/bzImage", out / "bzImage")
    write_json(out / "meta.json", {
        "variant": variant, "release": release, "sha256": sha256_file(out / "bzImage"),
        "build_seconds": round(time.monotonic() - start), "source_version": source_version(),
    })
    say(f"{variant} kernel {release} built in {elapsed(start)}")


def _source_tree() -> Path:
    root = cache_dir() / "kernel" / f"src-{source_version()}"
    tree = root / "linux-source-6.12"
    if (root / ".unpacked").exists():
        return tree
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    say(f"unpacking {SOURCE_TARBALL}")
    subprocess.run(["tar", "-xf", str(SOURCE_TARBALL), "-C", str(root)], check=True)
    (root / ".unpacked").touch()
    return tree


def _set_patch(tree: Path, wanted) -> None:
    """Bring the tree to exactly the wanted patch (or none), reverting the one applied."""
    applied_file = tree / ".bpfoom-applied.patch"
    applied = applied_file.read_bytes() if applied_file.exists() else None
    wanted_bytes = wanted.read_bytes() if wanted else None
    if applied == wanted_bytes:
        return
    if applied is not None:
        _patch(tree, applied, reverse=True)
        applied_file.unlink()
    if wanted_bytes is not None:
        _patch(tree, wanted_bytes, reverse=False)
        applied_file.write_bytes(wanted_bytes)


def _patch(tree: Path, patch: bytes, reverse: bool) -> None:
    args = ["patch", "-p1", "--batch", "--forward"] + (["--reverse"] if reverse else [])
    result = subprocess.run(args, cwd=tree, input=patch, capture_output=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{'reverting' if reverse else 'applying'} the hook patch failed in {tree}:\n"
                       f"{result.stdout.decode()[-2000:]}\nremove {tree.parent} to start from a clean tree")


def _configure(tree: Path) -> None:
    env = dict(os.environ, KCONFIG_ALLCONFIG=str(CONFIG_FRAGMENT))
    result = subprocess.run(["make", "ARCH=x86_64", "allnoconfig"], cwd=tree, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"kernel configuration failed:\n{result.stderr[-2000:]}")
    # Kconfig silently drops an option whose dependencies are not met: refuse that.
    config = (tree / ".config").read_text()
    wanted = [line for line in CONFIG_FRAGMENT.read_text().splitlines() if line.startswith("CONFIG_")]
    dropped = [line for line in wanted if line not in config.splitlines()]
    if dropped:
        raise LabError(f"{CONFIG_FRAGMENT.name}: Kconfig did not keep {', '.join(dropped)} "
                       "(a dependency is missing from the fragment)")


def _make(tree: Path, targets: list, log: Path) -> None:
    """Run make, showing progress against the step count of the last full build."""
    estimate_file = cache_dir() / "kernel" / "steps.json"
    estimate = (read_json(estimate_file) or {}).get("steps")
    jobs = str((os.cpu_count() or 1) + 1)
    start = last_report = time.monotonic()
    steps = 0
    with open(log, "w") as log_handle:
        proc = subprocess.Popen(["make", "ARCH=x86_64", f"-j{jobs}", *targets], cwd=tree,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log_handle.write(line)
            if _STEP.match(line):
                steps += 1
            if time.monotonic() - last_report >= 20:
                last_report = time.monotonic()
                share = f" of ~{estimate} ({min(99, 100 * steps // estimate)}%)" if estimate else ""
                say(f"  kernel build: {steps} steps{share}, {elapsed(start)}")
        proc.wait()
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise LabError(f"kernel build failed (full log: {log}):\n{tail}")
    if estimate is None or steps > estimate:
        write_json(estimate_file, {"steps": steps})

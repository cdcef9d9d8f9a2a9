"""Build the lab host images: Debian with systemd, sshd, python3, libbpf1.

One base image serves every host of a variant (each boots a copy-on-write overlay of it):
`base` is bookworm (Debian 12), `trixie` the same recipe on Debian 13. The `bcc` variant adds
python3-bpfcc, only for the benchmark that compares the agent with bcc. The `stock` variant adds
Debian's own kernel packages with their modules and initramfs (fleetlab.kernel.STOCK_KERNELS boots
them): the kernels a fleet without the hook runs.
It holds no key: the lab's SSH key reaches a host on its kernel command line.
The image is rebuilt when its recipe (this file, image/rootfs) changes, or when
its recorded sha256 no longer matches (a corrupted image is never booted).
"""

import re
import shutil
import subprocess
import time
from pathlib import Path

from .common import (LAB_ROOT, LabError, cache_dir, cached_artifact_ok, content_key, elapsed, ensure_apt_packages,
                     locked, say, sha256_file, write_json)

ROOTFS_FILES = LAB_ROOT / "image" / "rootfs"
# libpam-systemd, as on every Debian host with systemd: logins get their session scope, and users their
# systemd user manager (user@UID.service, a cgroup subtree the user owns: the tenant of issue 21's tests).
# prometheus-node-exporter serves the agent's metrics file (its textfile collector reads the agent's default
# directory), as on a monitored host: the lab's Prometheus scrapes it (tests/kernel/test_alerts.py).
PACKAGES = [
    "systemd-sysv", "udev", "dbus", "libpam-systemd", "openssh-server", "python3", "python3-apt",
    "libbpf1", "bpftool", "iproute2", "procps", "kmod", "sudo", "prometheus-node-exporter",
]
# A normal user with passwordless sudo, as most fleets log in (the lab proves `become` through it).
SUDO_USER = "lab-operator"
# Per image variant: the Debian release, the extra packages, the disk size. The stock kernels' packages are
# resolved on this machine's apt lists when the image is built (stock_kernel_packages), so a new ABI of
# Debian's 6.12 makes a new image (its key names the packages).
IMAGE_VARIANTS = {
    "base": ("bookworm", [], "1536M"),
    "trixie": ("trixie", [], "1536M"),
    "bcc": ("bookworm", ["python3-bpfcc", "xz-utils"], "1536M"),
    "stock": ("bookworm", ["initramfs-tools", "STOCK_KERNELS"], "3G"),
}
BUILD_DEPENDENCIES = {"mmdebstrap": "mmdebstrap", "genext2fs": "genext2fs",
                      "resize2fs": "e2fsprogs", "tune2fs": "e2fsprogs"}


def packages(variant: str) -> list:
    if variant not in IMAGE_VARIANTS:
        raise LabError(f"unknown image variant {variant!r}: choose one of {', '.join(IMAGE_VARIANTS)}")
    extra = IMAGE_VARIANTS[variant][1]
    if "STOCK_KERNELS" in extra:
        extra = [p for p in extra if p != "STOCK_KERNELS"] + stock_kernel_packages()
    return PACKAGES + extra


def stock_kernel_packages() -> list:
    """Debian 12's own kernels: its 6.1 (linux-image-amd64's) and the newest 6.12 ABI of its archive."""
    from .kernel import stock_package  # the kernel recipe knows which packages these are
    return [stock_package(version) for version in ("6.1", "6.12")]


def recipe_key(variant: str = "base") -> str:
    suite, _extra, size = IMAGE_VARIANTS.get(variant, ("", [], ""))
    files = sorted(p for p in ROOTFS_FILES.rglob("*") if p.is_file())
    return content_key(suite, size, " ".join(packages(variant)), Path(__file__),
                       *[str(p.relative_to(ROOTFS_FILES)) for p in files], *files)


def base_image(variant: str = "base") -> Path:
    """Path of a verified base image, built when missing, outdated or corrupted."""
    out = image_dir(variant)
    with locked(cache_dir() / "image" / "build.lock"):
        if not cached_artifact_ok(out, "base.img"):
            suite, _extra, size = IMAGE_VARIANTS[variant]
            _build(out, suite, packages(variant), size)
    return out / "base.img"


def image_dir(variant: str) -> Path:
    """The cache entry of the variant's image: base.img, meta.json, and boot/ (its kernels, for `stock`)."""
    return cache_dir() / "image" / recipe_key(variant)


def _build(out: Path, suite: str, package_list: list, size: str) -> None:
    ensure_apt_packages(BUILD_DEPENDENCIES)
    start = time.monotonic()
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sources = work / "sources.list"
    sources.write_text(machine_apt_sources(suite))
    image = work / "base.img"
    say(f"building the {suite} host image with mmdebstrap (log: {work / 'mmdebstrap.log'})")
    customize = (
        f'cp -a {ROOTFS_FILES}/. "$1"/ && '
        'chroot "$1" systemctl enable systemd-networkd lab-ssh-key.service ssh && '
        f'chroot "$1" useradd --create-home --shell /bin/bash {SUDO_USER} && '
        f'echo "{SUDO_USER} ALL=(ALL) NOPASSWD: ALL" > "$1"/etc/sudoers.d/{SUDO_USER} && '
        f'chmod 0440 "$1"/etc/sudoers.d/{SUDO_USER} && '
        # The lab hosts cannot reach a registry: keep apt from trying.
        'rm -f "$1"/etc/apt/sources.list && : > "$1"/etc/fstab && '
        # qemu boots a kernel from outside the disk: a stock kernel's vmlinuz and initrd (built by its
        # package's postinst, with the modules it loads) are copied out beside the image.
        f'if ls "$1"/boot/vmlinuz-* >/dev/null 2>&1; then '
        f'mkdir -p {work}/boot && cp -L "$1"/boot/vmlinuz-* "$1"/boot/initrd.img-* {work}/boot/; fi'
    )
    command = [
        "mmdebstrap", "--variant=minbase", "--format=ext2", "--mode=root",
        f"--include={','.join(package_list)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        f"--customize-hook={customize}",
        suite, str(image), str(sources),
    ]
    with open(work / "mmdebstrap.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "".join((work / "mmdebstrap.log").read_text().splitlines(keepends=True)[-20:])
        raise LabError(f"mmdebstrap failed (log: {work / 'mmdebstrap.log'}):\n{tail}")
    # Room for the tests' files and journals; the overlays grow, not the base.
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, check=False)
    subprocess.run(["resize2fs", str(image)], check=True, capture_output=True)
    # mmdebstrap writes ext2; a journal, as a production host's root has, lets a power cycle (a lab fault
    # test) come back with a consistent filesystem.
    subprocess.run(["tune2fs", "-O", "has_journal", str(image)], check=True, capture_output=True)
    write_json(work / "meta.json", {"sha256": sha256_file(image), "suite": suite,
                                    "packages": package_list, "build_seconds": round(time.monotonic() - start)})
    work.rename(out)
    say(f"host image built in {elapsed(start)}")


def machine_apt_sources(suite: str, etc: Path = Path("/etc")) -> str:
    """The machine's own Debian sources, for `suite`, as one-line entries, never a hard-coded mirror.

    Another release than the machine's (trixie on a bookworm machine) comes from the same mirrors:
    each entry of the machine's own codename (bookworm, bookworm-updates, bookworm-security) is
    repeated with `suite` in its place. mmdebstrap pastes them into a one-line-format sources.list,
    so deb822 stanzas of /etc/apt/sources.list.d/*.sources are converted.
    """
    own = machine_codename(etc)
    entries = []
    for path in sorted((etc / "apt" / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" not in fields.get("Types", "").split():
                continue
            options = f"[signed-by={fields['Signed-By']}] " if "Signed-By" in fields else ""
            for uri in fields.get("URIs", "").split():
                for name in fields.get("Suites", "").split():
                    if name.split("-")[0] == own:
                        entries.append(f"deb {options}{uri} {suite}{name[len(own):]} {fields.get('Components', 'main')}")
    legacy = etc / "apt" / "sources.list"
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            words = line.split()
            options = [w for w in words[1:] if w.startswith("[")] if words[:1] == ["deb"] else []
            rest = words[1 + len(options):]
            if words[:1] == ["deb"] and len(rest) >= 2 and rest[1].split("-")[0] == own:
                entries.append(" ".join(["deb", *options, rest[0], suite + rest[1][len(own):], *rest[2:]]))
    if not entries:
        raise LabError(f"no Debian {own} entry in this machine's apt sources ({etc / 'apt'}): "
                       f"the {suite} images are built from them")
    return "\n".join(entries) + "\n"


def machine_codename(etc: Path = Path("/etc")) -> str:
    fields = dict(re.findall(r"^([A-Z_]+)=\"?([^\"\n]*)\"?$", (etc / "os-release").read_text(), re.M))
    return fields.get("VERSION_CODENAME", "bookworm")

"""Benchmark: the kernel guide's steps, as written, with Debian's own configuration; then the package booted.

    python3 tests/benchmarks/kernel_package_build.py [--until configure|package|boot] [--work DIR]

The guide is docs/docsite/rst/kernel-hook.rst, "Getting a kernel with the hook". configure: unpack
linux-source-6.12, apply the collection's kernel/0001-*.patch, start from Debian's configuration of its
6.12 (read from the lab's stock image, where Debian's package installed it), scripts/config as the guide
says, make olddefconfig, and check the options the hook needs. package: make bindeb-pkg (hours on two
cores: Debian's configuration builds thousands of modules). boot: install the package on a lab host of
the stock image (dpkg -i, as the guide's playbook does), boot it, and print whether its BTF has the hook.
Each step prints its time; nothing is timed against a target.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

from fleetlab import common, fleet, image, kernel  # noqa: E402  (needs the path above)

STEPS = ("configure", "package", "boot")
HOOK_OPTIONS = ("CONFIG_BPF_SYSCALL=y", "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_FUNCTION_TRACER=y")


def run(argv, cwd, log=None):
    start = time.monotonic()
    with open(log, "w") if log else open(os.devnull, "w") as out:
        subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def configure(work: Path) -> Path:
    common.ensure_apt_packages({**kernel.BUILD_DEPENDENCIES, "debugfs": "e2fsprogs", "rsync": "rsync",
                                "dh": "debhelper"})
    release = kernel.kernel_release("debian612")
    config = work / f"config-{release}"
    stock = image.base_image(kernel.STOCK_IMAGE)
    subprocess.run(["debugfs", "-R", f"dump /boot/config-{release} {config}", str(stock)],
                   capture_output=True, check=True)
    tree = work / "linux-source-6.12"
    if tree.exists():
        subprocess.run(["rm", "-rf", str(tree)], check=True)
    seconds = run(["tar", "-xf", str(kernel.SOURCE_TARBALL)], work)
    print(f"unpack {kernel.SOURCE_TARBALL.name}: {seconds:.0f} s")
    with open(kernel.HOOK_PATCH) as patch:
        subprocess.run(["patch", "-p1", "--batch"], cwd=tree, stdin=patch, capture_output=True, check=True)
    print(f"patch {kernel.HOOK_PATCH.name}: applied")
    (tree / ".config").write_bytes(config.read_bytes())
    run(["scripts/config", "--set-str", "SYSTEM_TRUSTED_KEYS", "", "--set-str", "SYSTEM_REVOCATION_KEYS", "",
         "--set-str", "LOCALVERSION", "-bpfoom", "--disable", "LOCALVERSION_AUTO"], tree)
    seconds = run(["make", "olddefconfig"], tree)
    lines = (tree / ".config").read_text().splitlines()
    missing = [option for option in HOOK_OPTIONS if option not in lines]
    modules = sum(1 for line in lines if line.endswith("=m"))
    print(f"make olddefconfig from Debian's {release}: {seconds:.0f} s; {modules} modules; "
          f"{'missing ' + ', '.join(missing) if missing else 'the hook options are all set'}")
    if missing:
        raise SystemExit(1)
    return tree


def package(tree: Path) -> Path:
    log = tree.parent / "bindeb-pkg.log"
    print(f"make -j{os.cpu_count()} bindeb-pkg (log: {log})", flush=True)
    seconds = run(["make", f"-j{os.cpu_count()}", "bindeb-pkg"], tree, log)
    [deb] = [p for p in tree.parent.glob("linux-image-*-bpfoom_*.deb") if "dbg" not in p.name]
    print(f"bindeb-pkg: {seconds / 60:.0f} min; {deb.name} ({deb.stat().st_size >> 20} MiB)")
    return deb


def boot(deb: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bpfoom-kernel-package-") as lab_dir:
        os.environ["BPFOOM_LAB_DIR"] = lab_dir
        try:
            host = fleet.up(["pkg=1:debian612"], memory_mib=1024)["hosts"]["pkg1"]
            fleet.copy_to(host, deb, "/var/tmp/bpfoom-kernel.deb")
            start = time.monotonic()
            fleet.run_on(host, "dpkg -i /var/tmp/bpfoom-kernel.deb", timeout=1800)
            print(f"dpkg -i on the host (initramfs included): {time.monotonic() - start:.0f} s")
            release = fleet.run_on(host, "dpkg-deb -f /var/tmp/bpfoom-kernel.deb Package").stdout.strip()
            release = release.removeprefix("linux-image-")
            boot_files = Path(lab_dir) / "boot"
            boot_files.mkdir()
            for name in (f"vmlinuz-{release}", f"initrd.img-{release}"):
                with open(boot_files / name, "wb") as copy:
                    subprocess.run(fleet.ssh_command(host, f"cat /boot/{name}"), stdout=copy, check=True)
            # The lab boots a kernel from outside the disk: what grub would boot next, handed to qemu.
            kernel_files = (boot_files / f"vmlinuz-{release}", boot_files / f"initrd.img-{release}")
            fleet.reboot("pkg1", hard=True, timeout=600, boot_files=kernel_files)
            running = fleet.run_on(host, "uname -r").stdout.strip()
            hook = fleet.run_on(host, "bpftool btf dump file /sys/kernel/btf/vmlinux | "
                                      "grep -c -E \"'(bpf_oom_evaluate_task|bpf_set_policy_name|set_oom_policy_name)'\"",
                                check=False).stdout.strip()
            print(f"booted {running}: {hook} of the 3 hook functions in its BTF")
        finally:
            fleet.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--until", choices=STEPS, default="boot")
    parser.add_argument("--work", type=Path, default=common.cache_dir() / "kernel-package")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tree = configure(args.work)
    if args.until == "configure":
        return 0
    deb = package(tree)
    if args.until == "boot":
        boot(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""labctl: build and run the lab fleet. `labctl --help` lists the commands."""

import argparse
import json
import os
import sys

from . import controller, fleet, image, kernel, prometheus
from .common import LabError, ensure_apt_packages

# What the controller side of the tests needs: BPF objects and the static memhog.
CONTROLLER_DEPENDENCIES = {"clang": "clang", "/usr/include/bpf/bpf_helpers.h": "libbpf-dev",
                           "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev", "git": "git",
                           "pahole": "dwarves"}     # tests/compile reads the shared structs' layout with it


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="labctl", description=__doc__.split(":", 1)[1].strip())
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("kernel", help="build (or reuse) a lab kernel and print its path")
    build.add_argument("--variant", choices=sorted([*kernel.VARIANTS, *kernel.STOCK_KERNELS]), default="patched")
    build_image = commands.add_parser("image", help="build (or reuse) the host image and print its path")
    build_image.add_argument("--variant", choices=sorted(image.IMAGE_VARIANTS), default="base")
    commands.add_parser("deps", help="install the Debian packages the lab and the tests need")
    commands.add_parser("prometheus", help="unpack (or reuse) Prometheus' binaries and print their directory")
    other_core = commands.add_parser("controller", help="run a command on the controller of another ansible-core "
                                                        "release (a Debian trixie root, built or reused)")
    other_core.add_argument("core", choices=sorted(controller.CORES))
    other_core.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND", help="default: ansible --version")

    boot = commands.add_parser("up", help="boot hosts, wait for SSH, write the inventory")
    boot.add_argument("--group", action="append", metavar="GROUP=COUNT[:KERNEL[:IMAGE]]",
                      help="hosts to boot, repeatable (default: lab=1)")
    boot.add_argument("--memory", type=int, default=768, metavar="MIB", help="memory per host")
    boot.add_argument("--cpus", type=int, default=1, help="vCPUs per host")
    boot.add_argument("--base-port", type=int, help="first SSH port (default: free ports from 2222)")
    boot.add_argument("--timeout", type=int, default=240, help="seconds to wait for SSH")

    commands.add_parser("down", help="stop this lab's hosts and remove their overlays")
    commands.add_parser("status", help="print the hosts as JSON")
    commands.add_parser("inventory", help="print the inventory path")

    shell = commands.add_parser("ssh", help="open a shell (or run a command) on a host")
    shell.add_argument("host")
    shell.add_argument("remote", nargs=argparse.REMAINDER)

    restart = commands.add_parser("reboot", help="reboot one host, keeping its disk")
    restart.add_argument("host")
    restart.add_argument("--hard", action="store_true", help="power-cycle qemu instead of systemctl reboot")

    args = parser.parse_args(argv)
    try:
        if args.command == "kernel":
            print(kernel.kernel_image(args.variant))
        elif args.command == "image":
            print(image.base_image(args.variant))
        elif args.command == "deps":
            ensure_apt_packages({**kernel.BUILD_DEPENDENCIES, **image.BUILD_DEPENDENCIES,
                                 **fleet.RUN_DEPENDENCIES, **controller.BUILD_DEPENDENCIES,
                                 **CONTROLLER_DEPENDENCIES})
        elif args.command == "prometheus":
            print(prometheus.binaries())
        elif args.command == "controller":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            controller.exec_in(args.core, command or ["ansible", "--version"])
        elif args.command == "up":
            if args.memory < 256 or args.cpus < 1:
                raise LabError("--memory must be at least 256 (MiB) and --cpus at least 1")
            fleet.up(args.group or ["lab=1"], args.memory, args.cpus, args.base_port, args.timeout)
            print(fleet.inventory_path())
        elif args.command == "down":
            fleet.down()
        elif args.command == "status":
            print(json.dumps(fleet.status(), indent=2))
        elif args.command == "inventory":
            print(fleet.inventory_path())
        elif args.command == "ssh":
            host = fleet.get_host(args.host)
            command = fleet.ssh_command(host, *args.remote)
            if sys.stdin.isatty() and not args.remote:
                command.insert(1, "-t")
            os.execvp(command[0], command)
        elif args.command == "reboot":
            fleet.reboot(args.host, args.hard)
    except LabError as error:
        print(f"labctl: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labctl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

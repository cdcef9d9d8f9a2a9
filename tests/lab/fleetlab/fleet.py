"""Boot, reach, reboot and stop the lab hosts (qemu, TCG), and write their inventory.

Every host is a qemu process with its own copy-on-write overlay of the base
image, its own loopback SSH port and its own serial log. The fleet's state
(lab_dir()/fleet.json) records each host as soon as it is started, so `down`
stops exactly the processes this lab started, even after a failed `up`.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .common import LabError, elapsed, lab_dir, other_lab, read_json, say, write_json
from .image import IMAGE_VARIANTS, base_image
from .kernel import STOCK_IMAGE, STOCK_KERNELS, VARIANTS, kernel_image, kernel_initrd, kernel_release

QEMU = "qemu-system-x86_64"
RUN_DEPENDENCIES = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "ssh": "openssh-client",
                    "ssh-keygen": "openssh-client"}
DEFAULT_BASE_PORT = 2222
QEMU_OVERHEAD_MIB = 200        # TCG translation cache and device models, per host
HOST_RESERVE_MIB = 1024        # left to the controller, ansible and the build tools
_GROUP_SPEC = re.compile(r"^(?P<group>[a-z][a-z0-9_]{0,30})=(?P<count>\d+)(?::(?P<kernel>[a-z0-9]+))?(?::(?P<image>[a-z]+))?$")


def _state_file() -> Path:
    return lab_dir() / "fleet.json"


def load_fleet() -> dict:
    return read_json(_state_file(), {"hosts": {}})


def _save_fleet(fleet: dict) -> None:
    write_json(_state_file(), fleet)


def ssh_key() -> Path:
    """The lab's SSH key: generated per lab directory, never committed, never in the image."""
    key = lab_dir() / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(mode=0o700, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bpfoom-lab",
                        "-f", str(key)], check=True)
    return key


def ssh_command(host: dict, *remote: str, connect_timeout: int = 5) -> list:
    return ["ssh", "-i", str(ssh_key()), "-p", str(host["port"]),
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "root@127.0.0.1", *remote]


def port_forward_command(host: dict, local_port: int, remote_port: int) -> list:
    """ssh that forwards 127.0.0.1:local_port on the controller to the host's own 127.0.0.1:remote_port
    (the lab's hosts reach loopback only, and only SSH is forwarded by qemu), until it is stopped."""
    command = ssh_command(host)
    return command[:-1] + ["-N", "-o", "ExitOnForwardFailure=yes",
                           "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}", command[-1]]


def run_on(host: dict, command: str, timeout: int = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell command on a host; a failure names the host and shows its stderr."""
    result = subprocess.run(ssh_command(host, command), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise LabError(f"{host['name']}: `{command}` exited {result.returncode}: {result.stderr.strip()}")
    return result


def copy_to(host: dict, local: Path, remote: str) -> None:
    """Copy a file, or a directory with what it holds, to REMOTE on a host."""
    subprocess.run(["scp", "-q", *(["-r"] if Path(local).is_dir() else []), "-i", str(ssh_key()), "-P", str(host["port"]),
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                    str(local), f"root@127.0.0.1:{remote}"], check=True, timeout=120)


def parse_group_specs(specs: list) -> list:
    """`web=2`, `legacy=1:unpatched`, `bench=1:patched:bcc`, `stock=1:debian61` -> [(group, count, kernel, image)].

    A stock kernel boots the image that holds its modules: its image is `stock`, unless given."""
    plans = []
    for spec in specs:
        match = _GROUP_SPEC.match(spec)
        if not match:
            raise LabError(f"bad --group {spec!r}: write GROUP=COUNT[:KERNEL[:IMAGE]], e.g. web=2 or "
                           "old=1:unpatched (GROUP in lower case letters, digits and _)")
        kernel = match["kernel"] or "patched"
        if kernel not in VARIANTS and kernel not in STOCK_KERNELS:
            raise LabError(f"bad --group {spec!r}: kernel {kernel!r} is not one of "
                           f"{', '.join([*VARIANTS, *STOCK_KERNELS])}")
        image_variant = match["image"] or (STOCK_IMAGE if kernel in STOCK_KERNELS else "base")
        if kernel in STOCK_KERNELS and image_variant != STOCK_IMAGE:
            raise LabError(f"bad --group {spec!r}: the stock kernel {kernel} boots the {STOCK_IMAGE} image, "
                           "which holds its modules")
        if image_variant not in IMAGE_VARIANTS:
            raise LabError(f"bad --group {spec!r}: image {image_variant!r} is not one of {', '.join(IMAGE_VARIANTS)}")
        count = int(match["count"])
        if count < 1:
            raise LabError(f"bad --group {spec!r}: a group needs at least one host")
        plans.append((match["group"], count, kernel, image_variant))
    return plans


def host_names(plans: list) -> list:
    """One name per planned host: GROUP1, GROUP2...; a group named twice (say, with another kernel) counts on."""
    counts, names = {}, []
    for group, count, _kernel, _image in plans:
        for _host in range(count):
            counts[group] = counts.get(group, 0) + 1
            names.append(f"{group}{counts[group]}")
    return names


def check_capacity(host_count: int, memory_mib: int) -> None:
    """Refuse a fleet this machine cannot hold before starting any of it."""
    with open("/proc/meminfo") as meminfo:
        available = next(int(line.split()[1]) // 1024 for line in meminfo if line.startswith("MemAvailable:"))
    needed = host_count * (memory_mib + QEMU_OVERHEAD_MIB)
    if needed > available - HOST_RESERVE_MIB:
        raise LabError(f"{host_count} hosts of {memory_mib} MiB need about {needed} MiB, but this machine "
                       f"has {available} MiB available ({HOST_RESERVE_MIB} MiB kept for itself): "
                       "ask for fewer hosts or less --memory")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assign_ports(count: int, base_port) -> list:
    """Consecutive ports from --base-port (all must be free), or the first free ones from 2222."""
    if base_port is not None:
        ports = list(range(base_port, base_port + count))
        busy = [port for port in ports if not port_free(port)]
        if busy:
            raise LabError(f"port {busy[0]} on 127.0.0.1 is already in use: choose another --base-port "
                           "or stop the program holding it")
        return ports
    ports, candidate = [], DEFAULT_BASE_PORT
    while len(ports) < count:
        if port_free(candidate):
            ports.append(candidate)
        candidate += 1
    return ports


def up(group_specs: list, memory_mib: int = 768, cpus: int = 1, base_port=None,
       timeout: int = 240) -> dict:
    """Boot the fleet, wait until every host answers SSH, write the inventory."""
    fleet = load_fleet()
    if fleet["hosts"]:
        raise LabError(f"a fleet is already up in {lab_dir()} ({', '.join(fleet['hosts'])}): "
                       "run `labctl down` first")
    if shutil.which(QEMU) is None:
        raise LabError(f"{QEMU} not found: install it with `apt-get install qemu-system-x86 qemu-utils`")
    plans = parse_group_specs(group_specs)
    count = sum(plan[1] for plan in plans)
    check_capacity(count, memory_mib)
    ports = iter(assign_ports(count, base_port))
    kernels = {kernel: kernel_image(kernel) for kernel in {plan[2] for plan in plans}}
    bases = {variant: base_image(variant) for variant in {plan[3] for plan in plans}}
    hosts = {}
    names = iter(host_names(plans))
    for group, n, kernel, image_variant in plans:
        for _host in range(n):
            name = next(names)
            hosts[name] = {"name": name, "group": group, "kernel": kernel, "port": next(ports),
                           "memory": memory_mib, "cpus": cpus, "bzImage": str(kernels[kernel]),
                           "initrd": str(kernel_initrd(kernel) or ""), "image": image_variant,
                           "release": kernel_release(kernel), "base": str(bases[image_variant])}
    fleet = {"hosts": {}}
    start = time.monotonic()
    try:
        for host in hosts.values():
            _create_overlay(host)
            fleet["hosts"][host["name"]] = host        # recorded before start: `down` finds it
            _save_fleet(fleet)
            _start_qemu(host)
        _wait_for_ssh(list(hosts.values()), timeout)
    except BaseException:
        say("boot failed: stopping the hosts this run started")
        down()
        raise
    _save_fleet(fleet)
    write_inventory(fleet)
    say(f"{count} hosts up in {elapsed(start)}; inventory: {inventory_path()}")
    return fleet


def _host_dir(host: dict) -> Path:
    return lab_dir() / "hosts" / host["name"]


def _create_overlay(host: dict) -> None:
    directory = _host_dir(host)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", host["base"], "-F", "raw",
                    str(directory / "overlay.qcow2")], check=True)


def _start_qemu(host: dict) -> None:
    directory = _host_dir(host)
    key = base64.b64encode(Path(str(ssh_key()) + ".pub").read_bytes().strip()).decode()
    # loglevel=4 keeps OOM reports (warnings) off the slow emulated serial port.
    cmdline = (f"root=/dev/vda rw console=ttyS0 loglevel=4 systemd.hostname={host['name']} "
               f"bpfoom.ssh_key={key} {host.get('kernel_args', '')}").strip()
    command = [
        QEMU, "-name", f"bpfoom-lab-{host['name']}",
        "-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", str(host["cpus"]), "-m", str(host["memory"]),
        "-kernel", host["bzImage"], *(["-initrd", host["initrd"]] if host.get("initrd") else []),
        "-append", cmdline,
        "-drive", f"file={directory / 'overlay.qcow2'},if=virtio,format=qcow2",
        # restrict=on: the host reaches nothing but its own forwarded SSH port.
        "-nic", f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{host['port']}-:22",
        "-device", "virtio-rng-pci",
        "-display", "none", "-monitor", "none", "-parallel", "none",
        "-serial", f"file:{directory / 'serial.log'}",
        "-pidfile", str(directory / "qemu.pid"), "-daemonize",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{host['name']}: qemu did not start: {result.stderr.strip()}")
    host["started"] = time.time()


def _qemu_pid(host: dict):
    """The PID of this host's qemu, only if that process is still ours (PIDs get reused)."""
    pid_file = _host_dir(host) / "qemu.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(_host_dir(host) / "overlay.qcow2").encode() in cmdline else None


def ssh_ready(host: dict) -> bool:
    """Whether the host answers SSH now. A probe that hangs (qemu's port forward accepted the connection, the
    guest's sshd is still starting) is a host not ready yet, like a refused one: the boot's own timeout decides."""
    try:
        return subprocess.run(ssh_command(host, "true", connect_timeout=3), capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=30, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _wait_for_ssh(hosts: list, timeout: int) -> None:
    start = time.monotonic()
    waiting = {host["name"]: host for host in hosts}
    last_report = start
    while waiting:
        for name, host in list(waiting.items()):
            if _qemu_pid(host) is None:
                raise LabError(f"{name}: qemu exited during boot; serial log: {_serial_tail(host)}")
            if ssh_ready(host):
                host["boot_to_ssh_s"] = round(time.time() - host["started"], 1)
                say(f"{name}: SSH up after {host['boot_to_ssh_s']} s ({host['kernel']} kernel, port {host['port']})")
                del waiting[name]
        if waiting and time.monotonic() - start > timeout:
            name, host = next(iter(waiting.items()))
            raise LabError(f"{name}: no SSH after {timeout} s; serial log: {_serial_tail(host)}")
        if waiting and time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            say(f"waiting for SSH on {', '.join(waiting)} ({elapsed(start)})")
        time.sleep(0.5)


def _serial_tail(host: dict, lines: int = 15) -> str:
    log = _host_dir(host) / "serial.log"
    text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(empty)"]
    return f"{log}\n" + "\n".join(text)


def _stop_qemu(host: dict) -> None:
    pid = _qemu_pid(host)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    for _attempt in range(50):
        if _qemu_pid(host) is None:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def down() -> None:
    """Stop exactly the qemu processes of this lab and remove their overlays."""
    fleet = load_fleet()
    for host in fleet["hosts"].values():
        _stop_qemu(host)
        shutil.rmtree(_host_dir(host), ignore_errors=True)
        say(f"{host['name']}: stopped, overlay removed")
    _state_file().unlink(missing_ok=True)
    inventory_path().unlink(missing_ok=True)


@contextmanager
def bench_host(spec: str, **up_options):
    """A benchmark's own host (`spec`: "bench=1:KERNEL[:IMAGE]") in a temporary lab directory, stopped
    whatever happens: yields (host, a work directory for the benchmark's files)."""
    with tempfile.TemporaryDirectory(prefix="bpfoom-bench-") as work, other_lab(Path(work) / "lab"):
        try:
            yield up([spec], **up_options)["hosts"]["bench1"], Path(work)
        finally:
            down()


def get_host(name: str) -> dict:
    hosts = load_fleet()["hosts"]
    if name not in hosts:
        known = ", ".join(hosts) or "none (run `labctl up` first)"
        raise LabError(f"unknown lab host {name!r}; hosts of {lab_dir()}: {known}")
    return hosts[name]


def boot_id(host: dict) -> str:
    result = subprocess.run(ssh_command(host, "cat", "/proc/sys/kernel/random/boot_id"),
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    return result.stdout.strip()


def reboot(name: str, hard: bool = False, timeout: int = 240, kernel_args=None, boot_files=None) -> None:
    """Reboot one host keeping its disk: through systemd, or (hard) by restarting qemu.

    Hard only, from now on: kernel_args, what the kernel's command line adds (such as
    "lockdown=confidentiality"; "" takes it away); boot_files, (vmlinuz, initrd) the host boots
    instead of its kernel's (what grub would boot after a kernel package's install).
    """
    host = get_host(name)
    start = time.monotonic()
    changes = {**({"kernel_args": kernel_args} if kernel_args is not None else {}),
               **({"bzImage": str(boot_files[0]), "initrd": str(boot_files[1])} if boot_files else {})}
    if changes:
        if not hard:
            raise LabError(f"{name}: a new kernel or command line needs a hard reboot (qemu passes them)")
        fleet = load_fleet()
        fleet["hosts"][name].update(changes)
        host.update(changes)
        _save_fleet(fleet)
    if hard:
        _stop_qemu(host)
        _start_qemu(host)
        _wait_for_ssh([host], timeout)
    else:
        before = boot_id(host)
        subprocess.run(ssh_command(host, "systemctl", "reboot"), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60, check=False)
        while True:
            if time.monotonic() - start > timeout:
                raise LabError(f"{name}: not back after {timeout} s; serial log: {_serial_tail(host)}")
            time.sleep(1)
            if ssh_ready(host) and boot_id(host) not in ("", before):
                break
    say(f"{name}: rebooted in {elapsed(start)}")


def status() -> list:
    return [dict(host, running=_qemu_pid(host) is not None) for host in load_fleet()["hosts"].values()]


def inventory_path() -> Path:
    return lab_dir() / "inventory.yml"


def write_inventory(fleet: dict, path: Path = None, only: list = None) -> None:
    """An Ansible inventory (in PATH, the lab's by default): one group per --group, plus kernel_VARIANT; ONLY:
    just these hosts."""
    groups = {}
    for host in fleet["hosts"].values():
        if only is not None and host["name"] not in only:
            continue
        groups.setdefault(host["group"], []).append(host)
        groups.setdefault(f"kernel_{host['kernel']}", []).append(host)
    lines = [
        "# Written by `labctl up`; rewritten on every boot of the lab.",
        "all:",
        "  vars:",
        "    ansible_host: 127.0.0.1",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {ssh_key()}",
        # ServerAlive: a host that loses power mid-task is unreachable within 15 s, not a hang until TCP gives up.
        "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        " -o ServerAliveInterval=5 -o ServerAliveCountMax=3",
        "    ansible_python_interpreter: /usr/bin/python3",
        # One SSH session per module execution; bpfoom.fleet converges a host in one execution.
        "    ansible_pipelining: true",
        "  children:",
    ]
    for group, members in groups.items():
        lines += [f"    {group}:", "      hosts:"]
        for host in members:
            lines += [f"        {host['name']}:",
                      f"          ansible_port: {host['port']}",
                      f"          lab_kernel: {host['kernel']}",
                      f"          lab_kernel_release: {host['release']}"]
    (path or inventory_path()).write_text("\n".join(lines) + "\n")


def inventory_directory(directory: Path, group_vars, only: list = None) -> Path:
    """The inventory with group_vars beside it, as operators keep one: a directory.

    group_vars: {group: variables}, or a directory of group_vars files to copy. only: just these hosts.
    """
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    write_inventory(load_fleet(), directory / "hosts.yml", only)
    if isinstance(group_vars, dict):
        (directory / "group_vars").mkdir()
        for group, variables in group_vars.items():
            (directory / "group_vars" / f"{group}.yml").write_text(json.dumps(variables, indent=1) + "\n")
    else:
        shutil.copytree(group_vars, directory / "group_vars")
    return directory


# The rollout's one task per host: a canary's smoke test runs inside it (plugins/action/policy.py).
ROLLOUT_APPLY_TASK = "Apply the policy (agent, bpffs, make-before-break; verified from the kernel)"


def canary_smoke_results(events) -> dict:
    """{host: the smoke test's result} of the canaries of a rollout, from its job events (ansible-runner's or
    the AWX reproduction's, which have the same shape)."""
    return {event["event_data"]["host"]: event["event_data"]["res"]["smoke"] for event in events
            if event["event"] in ("runner_on_ok", "runner_on_failed")
            and event["event_data"].get("task") == ROLLOUT_APPLY_TASK and "smoke" in event["event_data"].get("res", {})}

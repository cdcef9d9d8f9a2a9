"""Unit tests of the lab tools' logic (no qemu, no kernel: the lab tier covers those)."""

import socket
import subprocess
from pathlib import Path

import pytest

from fleetlab import common, fleet, image, kernel
from fleetlab.common import LabError


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("BPFOOM_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("BPFOOM_LAB_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("specs, expected", [
    (["lab=1"], [("lab", 1, "patched", "base")]),
    (["web=2", "legacy=1:unpatched"], [("web", 2, "patched", "base"), ("legacy", 1, "unpatched", "base")]),
    (["bench=1:patched:bcc"], [("bench", 1, "patched", "bcc")]),
])
def test_group_specs(specs, expected):
    assert fleet.parse_group_specs(specs) == expected


@pytest.mark.parametrize("spec, message", [
    ("web", "GROUP=COUNT"),
    ("Web=1", "GROUP=COUNT"),
    ("web=0", "at least one host"),
    ("web=1:vanilla", "kernel 'vanilla'"),
    ("web=1:patched:fat", "image 'fat'"),
    ("web=-1", "GROUP=COUNT"),
])
def test_bad_group_specs_are_refused(spec, message):
    with pytest.raises(LabError, match=message):
        fleet.parse_group_specs([spec])


def test_a_group_named_twice_counts_its_hosts_on():
    plans = fleet.parse_group_specs(["web=1", "db=1", "web=2:unpatched"])
    assert fleet.host_names(plans) == ["web1", "db1", "web2", "web3"]


def test_capacity_refuses_more_than_the_machine_holds():
    with pytest.raises(LabError, match="ask for fewer hosts or less --memory"):
        fleet.check_capacity(10_000, 4096)
    fleet.check_capacity(1, 256)


def test_explicit_base_port_in_use_is_refused():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(LabError, match=f"port {port} on 127.0.0.1 is already in use"):
            fleet.assign_ports(1, port)


def test_automatic_ports_skip_busy_ones(monkeypatch):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        busy = holder.getsockname()[1]
        monkeypatch.setattr(fleet, "DEFAULT_BASE_PORT", busy)
        ports = fleet.assign_ports(2, None)
    assert busy not in ports and ports == sorted(set(ports)) and ports[0] > busy


def test_unknown_host_names_the_known_ones():
    with pytest.raises(LabError, match="unknown lab host 'nope'.*none"):
        fleet.get_host("nope")


def test_up_without_qemu_fails_before_starting_anything(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match="qemu-system-x86_64 not found: install it"):
        fleet.up(["lab=1"])
    assert fleet.load_fleet() == {"hosts": {}}


def test_inventory_has_groups_and_kernels():
    hosts = {
        "web1": {"name": "web1", "group": "web", "kernel": "patched", "port": 2222, "release": "6.12-bpfoom"},
        "old1": {"name": "old1", "group": "old", "kernel": "unpatched", "port": 2223, "release": "6.12-unpatched"},
    }
    fleet.write_inventory({"hosts": hosts})
    text = fleet.inventory_path().read_text()
    for expected in ("    web:", "    old:", "    kernel_patched:", "    kernel_unpatched:",
                     "ansible_port: 2223", "lab_kernel: unpatched", "lab_kernel_release: 6.12-bpfoom"):
        assert expected in text


def _machine_etc(tmp_path):
    """An /etc as a bookworm machine's: a deb822 file, a legacy list with a third-party line."""
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    (tmp_path / "apt" / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n")
    (tmp_path / "apt" / "sources.list").write_text(
        "deb [arch=amd64] http://security.invalid/debian-security bookworm-security main\n"
        "deb https://vendor.invalid/apt cloud-sdk-bookworm main\n# deb http://old.invalid bookworm main\n")
    return tmp_path


def test_apt_sources_come_from_the_machine(tmp_path):
    etc = _machine_etc(tmp_path)
    assert image.machine_apt_sources("bookworm", etc).splitlines() == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian bookworm main",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian bookworm-updates main",
        "deb [arch=amd64] http://security.invalid/debian-security bookworm-security main"]


def test_another_release_comes_from_the_machine_s_own_mirrors(tmp_path):
    etc = _machine_etc(tmp_path)
    assert [line.split(maxsplit=1)[1] for line in image.machine_apt_sources("trixie", etc).splitlines()] == [
        "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian trixie main",
        "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian trixie-updates main",
        "[arch=amd64] http://security.invalid/debian-security trixie-security main"]


def test_a_machine_without_debian_sources_is_told_where_they_are_read(tmp_path):
    etc = _machine_etc(tmp_path)
    (etc / "apt" / "sources.list.d" / "debian.sources").unlink()
    (etc / "apt" / "sources.list").write_text("deb https://vendor.invalid/apt cloud-sdk-bookworm main\n")
    with pytest.raises(LabError, match="no Debian bookworm entry in this machine's apt sources"):
        image.machine_apt_sources("trixie", etc)


def test_content_key_changes_with_content(tmp_path):
    one = tmp_path / "a"
    one.write_text("x")
    key = common.content_key("v", one)
    one.write_text("y")
    assert common.content_key("v", one) != key
    assert common.content_key("v", "y") == common.content_key("v", Path(one))


def test_kernel_keys_differ_per_variant():
    assert kernel.variant_key("patched") != kernel.variant_key("unpatched")


def test_unknown_kernel_variant_is_refused():
    with pytest.raises(LabError, match="unknown kernel variant 'vanilla'"):
        kernel.kernel_image("vanilla")


def test_hook_patch_names_the_three_interfaces():
    patch = kernel.HOOK_PATCH.read_text()
    for symbol in ("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name",
                   "select_bad_process_end", "policy_name=%s"):
        assert symbol in patch


@pytest.fixture
def qemu_installed(monkeypatch):
    """These tests are about checks made before qemu starts: they must not depend on the machine having it."""
    real_which = fleet.shutil.which
    monkeypatch.setattr(fleet.shutil, "which",
                        lambda name, *args, **kwargs: f"/usr/bin/{name}" if name == fleet.QEMU else real_which(name))


def test_up_without_qemu_names_the_package(monkeypatch):
    monkeypatch.setattr(fleet.shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(LabError, match="apt-get install qemu-system-x86 qemu-utils"):
        fleet.up(["lab=1"])
    assert fleet.load_fleet() == {"hosts": {}}


def test_up_with_a_busy_port_starts_nothing(tmp_path, qemu_installed):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(LabError, match="already in use"):
            fleet.up(["lab=1"], base_port=port)
    assert fleet.load_fleet() == {"hosts": {}}
    assert not (common.lab_dir() / "hosts").exists()


def test_up_beyond_capacity_starts_nothing(qemu_installed):
    with pytest.raises(LabError, match="ask for fewer hosts"):
        fleet.up(["big=64"], memory_mib=8192)
    assert fleet.load_fleet() == {"hosts": {}}


def test_cached_artifact_with_a_wrong_sha256_is_dropped(tmp_path):
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "thing").write_bytes(b"good")
    common.write_json(entry / "meta.json", {"sha256": common.sha256_file(entry / "thing")})
    assert common.cached_artifact_ok(entry, "thing")
    (entry / "thing").write_bytes(b"evil")
    assert not common.cached_artifact_ok(entry, "thing")
    assert not entry.exists()


def test_an_ssh_probe_that_hangs_is_a_host_not_ready_yet(monkeypatch):
    def hangs(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])
    monkeypatch.setattr(fleet, "ssh_command", lambda host, *remote, connect_timeout=5: ["ssh", "-p", "2222", "true"])
    monkeypatch.setattr(fleet.subprocess, "run", hangs)
    assert fleet.ssh_ready({"name": "h1", "port": 2222}) is False

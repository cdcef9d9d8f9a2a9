"""The lab itself: hosts reachable by Ansible through the generated inventory,
reboots that keep the disk, refusals that leave no half-state, and a corrupted
cache entry that is rebuilt rather than booted."""

import os
import shutil
import subprocess

import pytest

from fleetlab import common, fleet, image
from fleetlab.common import LabError
from lab_fleet import LAB_FLEET

pytestmark = pytest.mark.lab


def test_every_host_answers_ansible_ping(lab):
    result = subprocess.run(["ansible", "all", "-i", str(fleet.inventory_path()), "-m", "ping", "-o"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(line.split()[0] for line in result.stdout.splitlines() if "SUCCESS" in line) == \
        ["hook1", "hook2", "nohook1", "nohook2", "trixie1"]


def test_inventory_groups_hosts_by_kernel(lab):
    for group, suffix in (("kernel_patched", "-bpfoom"), ("kernel_debian612", "+deb12-amd64"),
                          ("kernel_debian61", "-amd64")):
        result = subprocess.run(["ansible", group, "-i", str(fleet.inventory_path()), "-m", "command",
                                 "-a", "uname -r", "-o"], capture_output=True, text=True, timeout=300,
                                check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        releases = [line.split()[-1] for line in result.stdout.splitlines()]
        assert releases and all(release.endswith(suffix) for release in releases), result.stdout


# What each kind of lab host runs: Debian's release, Python, libbpf, systemd (docs/docsite/rst/compatibility.rst).
PLATFORMS = {"hook2": ("12", "3.11", "1.1", "252"), "nohook1": ("12", "3.11", "1.1", "252"),
             "nohook2": ("12", "3.11", "1.1", "252"), "trixie1": ("13", "3.13", "1.5", "257")}


@pytest.mark.parametrize("name", sorted(PLATFORMS))
def test_each_host_runs_its_debian_release(lab, name):
    facts = fleet.run_on(lab[name], ". /etc/os-release; echo $VERSION_ID; python3 -c 'import sys; "
                                    "print(\"%d.%d\" % sys.version_info[:2])'; dpkg-query -W -f '${Version}\\n' libbpf1; "
                                    "systemctl --version | sed -n '1s/^systemd \\([0-9]*\\).*/\\1/p'").stdout.split()
    release, python, libbpf, systemd = PLATFORMS[name]
    assert facts[0] == release and facts[1] == python and facts[3] == systemd, facts
    assert facts[2].startswith(libbpf) or facts[2].split(":")[-1].startswith(libbpf), facts


def test_reboot_keeps_the_disk(lab):
    host = lab["hook2"]
    fleet.run_on(host, "echo kept > /root/reboot-marker")
    before = fleet.boot_id(host)
    fleet.reboot("hook2")
    assert fleet.boot_id(host) != before
    assert fleet.run_on(host, "cat /root/reboot-marker").stdout.strip() == "kept"


def test_a_second_up_in_the_same_lab_is_refused(lab):
    with pytest.raises(LabError, match="a fleet is already up"):
        fleet.up(["extra=1"])
    assert sorted(fleet.load_fleet()["hosts"]) == sorted(fleet.host_names(fleet.parse_group_specs(LAB_FLEET)))


def test_unknown_host_is_refused_by_labctl(lab):
    result = subprocess.run([str(common.LAB_ROOT / "labctl"), "ssh", "nosuchhost", "true"],
                            capture_output=True, text=True, check=False, env=dict(os.environ))
    assert result.returncode == 2
    assert "unknown lab host 'nosuchhost'" in result.stderr and "hook1" in result.stderr


def test_corrupted_image_is_rebuilt_not_booted(tmp_path, monkeypatch):
    """A flipped byte in a cached image is caught by its sha256 and the image rebuilt."""
    original = image.base_image()
    monkeypatch.setenv("BPFOOM_LAB_CACHE", str(tmp_path / "cache"))
    copy_dir = common.cache_dir() / "image" / original.parent.name
    copy_dir.mkdir(parents=True)
    subprocess.run(["cp", "--sparse=always", str(original), str(copy_dir / "base.img")], check=True)
    shutil.copy2(original.parent / "meta.json", copy_dir / "meta.json")
    with open(copy_dir / "base.img", "r+b") as disk:
        disk.seek(64 << 20)
        byte = disk.read(1)
        disk.seek(64 << 20)
        disk.write(bytes([byte[0] ^ 0xFF]))
    rebuilt = image.base_image()
    assert rebuilt == copy_dir / "base.img"
    assert common.cached_artifact_ok(copy_dir, "base.img")

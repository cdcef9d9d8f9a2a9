"""bpfoomctl's own state, with its state directory pointed at a temporary one: the store, the
last-known-good list, the rollback target, the manifest check and the unit's stop logic.

Loading and attaching are the lab tier's (a kernel with the hook); nothing here touches BPF.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "roles" / "agent" / "files"))
import bpfoomctl  # noqa: E402


@pytest.fixture
def state(tmp_path, monkeypatch):
    state_dir = tmp_path / "state"
    for name, path in (("STATE_DIR", state_dir), ("POLICY_STORE", state_dir / "policies"),
                       ("DESIRED_FILE", state_dir / "desired"), ("GOOD_FILE", state_dir / "last-known-good"),
                       ("LOCK_FILE", state_dir / "lock")):
        monkeypatch.setattr(bpfoomctl, name, str(path))
    # pytest's temporary directories live under /tmp, world-writable: the real check would refuse them.
    monkeypatch.setattr(bpfoomctl, "_check_safe", lambda path: None)
    return state_dir


def built(directory: Path, name: str, obj: bytes = b"\x7fELF object") -> dict:
    directory.mkdir(parents=True)
    (directory / "policy.bpf.o").write_bytes(obj)
    manifest = {"name": name, "hash": hashlib.sha256(name.encode()).hexdigest(),
                "object_sha256": hashlib.sha256(obj).hexdigest()}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_store_keeps_a_policy_by_its_hash(state, tmp_path):
    manifest = built(tmp_path / "incoming", "web")
    stored = bpfoomctl.store(str(tmp_path / "incoming"), manifest)
    assert stored == os.path.join(bpfoomctl.POLICY_STORE, manifest["hash"])
    assert bpfoomctl.read_manifest(stored) == manifest
    assert bpfoomctl.store(stored, manifest) == stored                       # storing from the store: no copy


def test_a_changed_object_is_refused_naming_the_file(state, tmp_path):
    built(tmp_path / "p", "web")
    (tmp_path / "p" / "policy.bpf.o").write_bytes(b"\x7fELF tampered")
    with pytest.raises(bpfoomctl.Failure) as refused:
        bpfoomctl.read_manifest(str(tmp_path / "p"))
    assert refused.value.code == 5 and f"{tmp_path}/p/policy.bpf.o has sha256" in str(refused.value)


def test_the_real_safety_check_refuses_a_world_writable_directory(tmp_path):
    target = tmp_path / "policy.bpf.o"
    target.write_bytes(b"x")
    with pytest.raises(bpfoomctl.Failure) as refused:
        bpfoomctl._check_safe(str(target))          # /tmp, above it, is world-writable
    assert refused.value.code == 6 and "world-writable" in str(refused.value)


def remember(state, tmp_path, names):
    hashes = []
    for name in names:
        manifest = built(tmp_path / f"in-{name}", name)
        bpfoomctl.store(str(tmp_path / f"in-{name}"), manifest)
        hashes.append(manifest["hash"])
    bpfoomctl._write(bpfoomctl.GOOD_FILE, " ".join(hashes))
    return hashes


def test_rollback_target_is_the_newest_good_policy_before_the_desired_one(state, tmp_path):
    old, web, web_next = remember(state, tmp_path, ["old", "web", "web_next"])
    bpfoomctl._write(bpfoomctl.DESIRED_FILE, web_next)
    assert bpfoomctl.rollback_target() == {"policy_name": "web", "policy_hash": web, "mode": "enforce"}
    bpfoomctl._write(bpfoomctl.DESIRED_FILE, web)           # after a rollback the good list is not reordered here
    assert bpfoomctl.rollback_target() == {"policy_name": "web_next", "policy_hash": web_next, "mode": "enforce"}


def test_rollback_target_skips_a_policy_no_longer_stored_but_not_a_damaged_one(state, tmp_path):
    old, web, web_next = remember(state, tmp_path, ["old", "web", "web_next"])
    bpfoomctl._write(bpfoomctl.DESIRED_FILE, web_next)
    # Damaged: still the target, so that the rollback fails naming the file, not lands on an older policy.
    damaged = Path(bpfoomctl.POLICY_STORE) / web / "policy.bpf.o"
    damaged.write_bytes(b"damaged")
    assert bpfoomctl.rollback_target() == {"policy_name": "web", "policy_hash": web, "mode": "enforce"}
    with pytest.raises(bpfoomctl.Failure, match=f"{damaged} has sha256 .*, its manifest says"):
        bpfoomctl.read_manifest(str(damaged.parent))
    for name in os.listdir(damaged.parent):
        os.unlink(damaged.parent / name)
    os.rmdir(damaged.parent)
    assert bpfoomctl.rollback_target() == {"policy_name": "old", "policy_hash": old, "mode": "enforce"}
    for stale in (old,):
        for name in os.listdir(Path(bpfoomctl.POLICY_STORE) / stale):
            os.unlink(Path(bpfoomctl.POLICY_STORE) / stale / name)
        os.rmdir(Path(bpfoomctl.POLICY_STORE) / stale)
    assert bpfoomctl.rollback_target() is None


def test_no_good_list_means_no_rollback(state):
    assert bpfoomctl._good_list() == [] and bpfoomctl.rollback_target() is None


@pytest.mark.parametrize("service_result, jobs, detaches", [
    ("success", "", True),                                           # systemctl stop: back to the kernel's choice
    ("exit-code", "", False),                                        # the agent crashed: keep the policy
    ("signal", "", False),
    ("success", "12 bpfoom.service restart running\n", False),       # a restart: the next start adopts it
    ("success", "12 bpfoom.service try-restart running\n", False),
    ("success", "13 other.service restart running\n", True),
])
def test_stop_detaches_only_when_someone_asked_the_agent_to_stop(monkeypatch, service_result, jobs, detaches):
    import subprocess
    calls = []
    monkeypatch.setenv("SERVICE_RESULT", service_result)
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(args, 0, jobs, ""))
    monkeypatch.setattr(bpfoomctl, "detach", lambda forget_desired=True: calls.append(forget_desired) or {"changed": True})
    result = bpfoomctl.stop()
    assert calls == ([False] if detaches else [])                    # a stop never forgets the desired policy
    assert result["changed"] == detaches


def test_a_store_that_cannot_be_written_leaves_no_half_copy(state, tmp_path, monkeypatch):
    old = built(tmp_path / "old", "web")
    bpfoomctl.store(str(tmp_path / "old"), old)
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device", os.path.join(bpfoomctl.POLICY_STORE, "x.new", "policy.bpf.o"))

    monkeypatch.setattr(bpfoomctl.os, "fsync", full_disk)
    newer = built(tmp_path / "newer", "web_next")
    with pytest.raises(OSError):
        bpfoomctl.store(str(tmp_path / "newer"), newer)
    monkeypatch.setattr(bpfoomctl.os, "fsync", real_fsync)
    assert os.listdir(bpfoomctl.POLICY_STORE) == [old["hash"]]           # the old copy, nothing half-written


def test_a_state_file_that_cannot_be_written_keeps_its_old_content(state, monkeypatch):
    bpfoomctl._write(bpfoomctl.DESIRED_FILE, "old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bpfoomctl.os, "fsync", full_disk)
    with pytest.raises(OSError):
        bpfoomctl._write(bpfoomctl.DESIRED_FILE, "new")
    assert bpfoomctl._read(bpfoomctl.DESIRED_FILE) == "old"
    assert sorted(os.listdir(bpfoomctl.STATE_DIR)) == ["desired"]


def test_a_full_state_directory_is_named_with_the_fix(state, monkeypatch, capsys):
    def full_disk(_policy_dir, _mode):
        raise OSError(28, "No space left on device", os.path.join(bpfoomctl.STATE_DIR, "policies", "h.new"))

    monkeypatch.setattr(bpfoomctl, "apply", full_disk)
    monkeypatch.setattr(bpfoomctl.os, "geteuid", lambda: 0)
    assert bpfoomctl.main(["bpfoomctl", "apply", "/somewhere"]) == 8
    answer = json.loads(capsys.readouterr().out)
    assert answer["msg"].startswith(f"cannot write {bpfoomctl.STATE_DIR}/policies/h.new: No space left on device; "
                                    "nothing was changed"), answer


def test_desired_problem_names_a_damaged_stored_copy(state, tmp_path):
    assert bpfoomctl.desired_problem() is None                            # nothing desired
    (web,) = remember(state, tmp_path, ["web"])
    bpfoomctl._write(bpfoomctl.DESIRED_FILE, web)
    assert bpfoomctl.desired_problem() is None
    (Path(bpfoomctl.POLICY_STORE) / web / "policy.bpf.o").write_bytes(b"damaged")
    assert bpfoomctl.desired_problem().startswith(f"{bpfoomctl.POLICY_STORE}/{web}/policy.bpf.o has sha256")


def test_rollback_goes_back_to_the_mode_that_verified(state, tmp_path):
    web, web_next = remember(state, tmp_path, ["web", "web_next"])
    bpfoomctl._write(bpfoomctl.GOOD_FILE, f"{web}-shadow {web_next}")
    bpfoomctl._write(bpfoomctl.DESIRED_FILE, web_next)
    assert bpfoomctl.rollback_target() == {"policy_name": "web", "policy_hash": web, "mode": "shadow"}
    assert bpfoomctl.split_key(bpfoomctl.pin_key(web, "shadow")) == (web, "shadow")
    assert bpfoomctl.split_key(web) == (web, "enforce")

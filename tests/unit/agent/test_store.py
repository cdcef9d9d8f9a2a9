"""bpfoomctl's own state, in a Store pointed at a temporary root: the store, the last-known-good list, the
rollback target, the manifest check, the unit's stop logic and the command line's refusals.

Loading and attaching are the lab tier's (a kernel with the hook); nothing here touches BPF.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest

from bpfoomctl import attach, cli, status, store as store_module  # noqa: E402
from bpfoomctl.contract import ExitCode, Failure  # noqa: E402
from bpfoomctl.store import Store, pin_key, split_key  # noqa: E402


def trust_all(_path, what=None):
    """pytest's temporary directories live under /tmp, world-writable: the real check would refuse them."""


@pytest.fixture
def state(tmp_path):
    return Store(str(tmp_path / "state"), check=trust_all)


def built(directory: Path, name: str, obj: bytes = b"\x7fELF object") -> dict:
    directory.mkdir(parents=True)
    (directory / "policy.bpf.o").write_bytes(obj)
    manifest = {"name": name, "hash": hashlib.sha256(name.encode()).hexdigest(),
                "object_sha256": hashlib.sha256(obj).hexdigest()}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_store_keeps_a_policy_by_its_hash(state, tmp_path):
    manifest = built(tmp_path / "incoming", "web")
    stored = state.keep(str(tmp_path / "incoming"), manifest)
    assert stored == os.path.join(state.policies, manifest["hash"])
    assert state.manifest(stored) == manifest
    assert state.keep(stored, manifest) == stored                       # storing from the store: no copy


def test_a_changed_object_is_refused_naming_the_file(state, tmp_path):
    built(tmp_path / "p", "web")
    (tmp_path / "p" / "policy.bpf.o").write_bytes(b"\x7fELF tampered")
    with pytest.raises(Failure) as refused:
        state.manifest(str(tmp_path / "p"))
    assert refused.value.code == ExitCode.MISMATCH and f"{tmp_path}/p/policy.bpf.o has sha256" in str(refused.value)


def test_the_real_safety_check_refuses_a_world_writable_directory(tmp_path):
    target = tmp_path / "policy.bpf.o"
    target.write_bytes(b"x")
    with pytest.raises(Failure) as refused:
        store_module.check_safe(str(target))          # /tmp, above it, is world-writable
    assert refused.value.code == ExitCode.UNSAFE_PATH and "world-writable" in str(refused.value)


def remember(state, tmp_path, names):
    hashes = []
    for name in names:
        manifest = built(tmp_path / f"in-{name}", name)
        state.keep(str(tmp_path / f"in-{name}"), manifest)
        hashes.append(manifest["hash"])
    for policy_hash in hashes:
        state.remember_good(policy_hash)
    return hashes


def test_rollback_target_is_the_newest_good_policy_before_the_desired_one(state, tmp_path):
    old, web, web_next = remember(state, tmp_path, ["old", "web", "web_next"])
    state.set_desired(web_next)
    assert attach.rollback_target(state) == {"policy_name": "web", "policy_hash": web, "mode": "enforce"}
    state.set_desired(web)           # after a rollback the good list is not reordered here
    assert attach.rollback_target(state) == {"policy_name": "web_next", "policy_hash": web_next, "mode": "enforce"}


def test_rollback_target_skips_a_policy_no_longer_stored_but_not_a_damaged_one(state, tmp_path):
    old, web, web_next = remember(state, tmp_path, ["old", "web", "web_next"])
    state.set_desired(web_next)
    # Damaged: still the target, so that the rollback fails naming the file, not lands on an older policy.
    damaged = Path(state.policies) / web / "policy.bpf.o"
    damaged.write_bytes(b"damaged")
    assert attach.rollback_target(state) == {"policy_name": "web", "policy_hash": web, "mode": "enforce"}
    with pytest.raises(Failure, match=f"{damaged} has sha256 .*, its manifest says"):
        state.manifest(str(damaged.parent))
    for name in os.listdir(damaged.parent):
        os.unlink(damaged.parent / name)
    os.rmdir(damaged.parent)
    assert attach.rollback_target(state) == {"policy_name": "old", "policy_hash": old, "mode": "enforce"}
    for stale in (old,):
        for name in os.listdir(Path(state.policies) / stale):
            os.unlink(Path(state.policies) / stale / name)
        os.rmdir(Path(state.policies) / stale)
    assert attach.rollback_target(state) is None


def test_no_good_list_means_no_rollback(state):
    assert state.good() == [] and attach.rollback_target(state) is None


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
    monkeypatch.setattr(attach, "detach", lambda store, forget_desired=True: calls.append(forget_desired) or
                        {"changed": True})
    result = attach.stop(Store("/nonexistent"))
    assert calls == ([False] if detaches else [])                    # a stop never forgets the desired policy
    assert result["changed"] == detaches


def test_a_store_that_cannot_be_written_leaves_no_half_copy(state, tmp_path, monkeypatch):
    old = built(tmp_path / "old", "web")
    state.keep(str(tmp_path / "old"), old)
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device", os.path.join(state.policies, "x.new", "policy.bpf.o"))

    monkeypatch.setattr(os, "fsync", full_disk)
    newer = built(tmp_path / "newer", "web_next")
    with pytest.raises(OSError):
        state.keep(str(tmp_path / "newer"), newer)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.listdir(state.policies) == [old["hash"]]           # the old copy, nothing half-written


def test_a_state_file_that_cannot_be_written_keeps_its_old_content(state, monkeypatch):
    state.set_desired("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        state.set_desired("new")
    assert state.desired() == "old"
    assert sorted(os.listdir(state.root)) == ["desired"]


def test_a_full_state_directory_is_named_with_the_fix(state, monkeypatch, capsys):
    def full_disk(store, _policy_dir, _mode):
        raise OSError(28, "No space left on device", os.path.join(store.root, "policies", "h.new"))

    monkeypatch.setattr(attach, "apply", full_disk)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cli.main(["bpfoomctl", "apply", "/somewhere"], store=state) == ExitCode.STATE_NOT_WRITABLE == 8
    answer = json.loads(capsys.readouterr().out)
    assert answer["msg"].startswith(f"cannot write {state.root}/policies/h.new: No space left on device; "
                                    "nothing was changed"), answer
    assert answer["msg"].endswith(f"free space in {state.root} and apply again")


@pytest.mark.parametrize("argv, complaint", [
    (["explain", "--top=abc"], "argument --top: 'abc' is not a whole number"),
    (["explain", "--top=0"], "argument --top: 0 is not 1 or more"),
    (["explain", "--topp=3"], "unrecognized arguments: --topp=3"),
    (["explain", "--to=3"], "unrecognized arguments: --to=3"),          # no abbreviations: a typo is refused
    (["apply", "--mode=observe", "/p"], "argument --mode: invalid choice: 'observe'"),
    (["apply"], "the following arguments are required: POLICY_DIR"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_a_wrong_command_line_is_a_usage_error_without_a_traceback(capsys, argv, complaint):
    with pytest.raises(SystemExit) as exited:
        cli.main(["bpfoomctl", *argv])
    out, err = capsys.readouterr()
    assert exited.value.code == ExitCode.USAGE == 2 and out == ""
    assert err.startswith("usage: bpfoomctl") and complaint in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"], ["apply", "--help"]])
def test_help_is_on_stdout_and_succeeds(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli.main(["bpfoomctl", *argv])
    out, err = capsys.readouterr()
    assert exited.value.code == 0 and out.startswith("usage: bpfoomctl") and err == ""
    if argv == ["--help"]:
        assert all(command in out for command in ("apply", "boot", "detach", "stop", "rollback", "status", "explain",
                                                  "events"))
        assert "9 no_shadow_points" in out                                 # the exit codes, by name


def test_desired_problem_names_a_damaged_stored_copy(state, tmp_path):
    assert status.desired_problem(state) is None                            # nothing desired
    (web,) = remember(state, tmp_path, ["web"])
    state.set_desired(web)
    assert status.desired_problem(state) is None
    (Path(state.policies) / web / "policy.bpf.o").write_bytes(b"damaged")
    assert status.desired_problem(state).startswith(f"{state.policies}/{web}/policy.bpf.o has sha256")


def test_rollback_goes_back_to_the_mode_that_verified(state, tmp_path):
    web, web_next = remember(state, tmp_path, ["web", "web_next"])
    state.remember_good(f"{web}-shadow")
    state.remember_good(web_next)
    state.set_desired(web_next)
    assert attach.rollback_target(state) == {"policy_name": "web", "policy_hash": web, "mode": "shadow"}
    assert split_key(pin_key(web, "shadow")) == (web, "shadow")
    assert split_key(web) == (web, "enforce")


@pytest.mark.parametrize("btf, missing, mode, code", [
    (True, ["bpf_oom_evaluate_task"], "enforce", ExitCode.NO_HOOK),
    (True, ["oom_badness"], "shadow", ExitCode.NO_SHADOW_POINTS),        # not a missing hook
    (False, [], "shadow", ExitCode.NO_BTF),
    (False, [], "enforce", ExitCode.NO_BTF),
])
def test_what_a_kernel_lacks_for_a_mode_has_its_own_exit_code(monkeypatch, btf, missing, mode, code):
    from bpfoomctl import kernel
    monkeypatch.setattr(kernel, "vmlinux_btf", lambda: 1 if btf else None)
    monkeypatch.setattr(kernel, "missing_functions", lambda names: [name for name in missing if name in names])
    failure = kernel.mode_failure(mode)
    assert failure.code == code


def test_the_kernels_function_names_are_found_in_its_btf_without_parsing_it(tmp_path):
    from bpfoomctl import kernel
    btf = tmp_path / "vmlinux"
    # A name across two chunks, one at the very end, one missing, and one only inside a longer name.
    btf.write_bytes(b"\x9f\xeb" + b"x" * 60 + b"\0oom_badness\0" + b"y" * 100 + b"\0out_of_memory_x\0"
                    + b"\0oom_kill_process\0")
    found = kernel.btf_names(["oom_badness", "out_of_memory", "oom_kill_process", "absent"], btf, chunk=64)
    assert found == {"oom_badness": True, "out_of_memory": False, "oom_kill_process": True, "absent": False}
    assert kernel.btf_names(["oom_badness"], tmp_path / "none") is None

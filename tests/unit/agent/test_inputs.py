"""bpfoomctl's host inputs: what a policy's names and targets resolve to on a host, without BPF.

The maps themselves are the lab tier's (tests/kernel/test_trust.py); here, what the agent wants them
to hold: unit names resolved (aliases, missing units), a target by PID and start time.
"""

import ctypes
import os

import pytest

from bpfoomctl import abi, inputs, metrics  # noqa: E402


def fnv1a64(data: bytes) -> int:
    value = 0xcbf29ce484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001b3) % 2**64
    return value


def test_cgroup_hash_is_fnv1a_over_the_zero_padded_name():
    assert inputs.cgroup_name_hash("a.slice") == fnv1a64(b"a.slice".ljust(64, b"\0"))
    assert inputs.cgroup_name_hash("x" * 100) == inputs.cgroup_name_hash("x" * 63)


def key_of(name):
    return bytes(ctypes.c_uint64(inputs.cgroup_name_hash(name)))


def test_unit_names_resolve_to_their_unit_and_a_missing_one_is_a_problem(monkeypatch):
    shown = {"sshd.service": {"Id": "ssh.service", "LoadState": "loaded"},
             "ngnix.service": {"Id": "ngnix.service", "LoadState": "not-found"}}
    monkeypatch.setattr(inputs, "systemctl_show", lambda names, _props: [shown[name] for name in names])
    entries, report = inputs.wanted_entries({"map": "avoid_units", "units": [
        {"name": "sshd.service", "value": 1}, {"name": "ngnix.service", "value": 1}]})
    assert key_of("ssh.service") in entries and key_of("sshd.service") not in entries
    assert report["units"] == {"sshd.service": "ssh.service", "ngnix.service": None}
    assert report["problem"] == "ngnix.service: no such unit on this host, so the policy matches nothing by this name"
    assert inputs.notes([report]) == [report["problem"], "avoid_units: sshd.service is ssh.service"]


def test_without_systemd_names_are_taken_as_given(monkeypatch):
    monkeypatch.setattr(inputs, "systemctl_show", lambda names, _props: None)
    entries, report = inputs.wanted_entries({"map": "m", "units": [{"name": "batch.slice", "value": 7}]})
    assert entries == {key_of("batch.slice"): bytes(abi.Unit(value=7))} and not report["problem"]


def test_a_target_is_its_pid_and_start_time(monkeypatch, tmp_path):
    monkeypatch.setattr(inputs, "check_safe", lambda path, what=None: None)
    pidfile = tmp_path / "me.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    entries, report = inputs.wanted_entries({"map": "bpfoom_target_pids", "pid_of": {"pidfile": str(pidfile)}})
    with open("/proc/self/stat") as handle:
        start = int(handle.read().rpartition(")")[2].split()[19])
    assert entries == {bytes(ctypes.c_uint32(os.getpid())): bytes(ctypes.c_uint64(start))}
    assert report == {"map": "bpfoom_target_pids", "target": str(pidfile), "pid": os.getpid(), "problem": None}


def test_a_target_that_is_not_running_selects_nobody_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(inputs, "check_safe", lambda path, what=None: None)
    monkeypatch.setattr(inputs, "systemctl_show", lambda names, _props: [{"MainPID": "0", "LoadState": "loaded"}])
    entries, report = inputs.wanted_entries({"map": "t", "pid_of": {"unit": "memcached.service"}})
    assert entries == {} and report["problem"] == ("memcached.service is not running: the policy selects nobody "
                                                   "until it runs")
    _entries, report = inputs.wanted_entries({"map": "t", "pid_of": {"pidfile": str(tmp_path / "gone.pid")}})
    assert report["problem"].startswith(f"{tmp_path}/gone.pid does not exist")


def test_a_pidfile_others_can_write_is_not_trusted(tmp_path):
    pidfile = tmp_path / "x.pid"                            # under /tmp: world-writable
    pidfile.write_text(f"{os.getpid()}\n")
    pid, _start, problem = inputs.resolve_target({"pidfile": str(pidfile)})
    assert pid is None and "world-writable: refusing to trust a PID others could have written" in problem


@pytest.mark.parametrize("problem, value", [(None, 1), ("x.service is not running", 0)])
def test_metrics_say_whether_each_host_input_resolves(problem, value):
    view = {"attached_policy": {"policy_name": "p", "policy_hash": "h", "mode": "enforce"},
            "policies": [{"attached": True}]}
    text = metrics.metrics_text(view, True, 0, 0, [{"map": "bpfoom_target_pids", "target": "x.service",
                                                   "pid": 5, "problem": problem}])
    assert f'\nbpfoom_host_input_ok{{map="bpfoom_target_pids",input="x.service"}} {value}\n' in text

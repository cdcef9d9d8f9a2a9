"""agent_host: converging the agent's files, unit, bpffs and service, against a temporary root.

systemctl and mount are recorded, not run; files are really written (as root,
like the module on a host), so modes, owners and the no-change second run are real.
"""

import os

import pytest

from ansible_collections.bpfoom.fleet.plugins.module_utils import agent_host

FILES = {"bpfoomctl.py": b"print('agent')\n", "bpfoomctl": b"#!/bin/sh\n", "bpfoom.service": b"[Unit]\n"}


class FakeModule:
    def __init__(self, active=True, enabled=True):
        self.commands = []
        self.state = {"is-active": active, "is-enabled": enabled}

    def get_bin_path(self, name):
        return f"/bin/{name}"

    def run_command(self, argv, environ_update=None):
        self.commands.append(argv[1:] if argv[0] == "/bin/systemctl" else argv)
        if argv[1] in self.state:
            return (0 if self.state[argv[1]] else 3), "", ""
        return 0, "", ""

    @staticmethod
    def atomic_move(source, destination):
        """As AnsibleModule.atomic_move does: a new destination gets 0666 & ~umask, whatever the source had."""
        existed = os.path.exists(destination)
        os.replace(source, destination)
        if not existed:
            os.chmod(destination, 0o644)

    def fail_json(self, **result):
        raise AssertionError(result)


@pytest.fixture
def root(tmp_path, monkeypatch):
    files = {name: (str(tmp_path / name), mode) for name, (_path, mode) in agent_host.AGENT_FILES.items()}
    monkeypatch.setattr(agent_host, "AGENT_FILES", files)
    monkeypatch.setattr(agent_host, "DIRECTORIES", ((str(tmp_path), 0o755),))
    monkeypatch.setattr(agent_host, "bpffs_mounted", lambda: True)
    return tmp_path


def converge(module, files=None, check=False):
    return agent_host.AgentHost(module).converge(files or FILES, check)


def changed_systemctl(module):
    return [command for command in module.commands if command[0] not in ("is-active", "is-enabled")]


def test_a_first_install_writes_every_file_and_starts_the_agent(root):
    module = FakeModule(active=False, enabled=False)
    plan = converge(module)
    assert plan["changed"] and len(plan["files_changed"]) == 3
    assert plan["unit_changed"] and plan["enable"] and plan["start"] and not plan["restart"]
    assert changed_systemctl(module) == [["daemon-reload"], ["enable", "bpfoom.service"], ["start", "bpfoom.service"]]
    assert (root / "bpfoomctl.py").read_bytes() == FILES["bpfoomctl.py"]
    assert oct((root / "bpfoomctl").stat().st_mode & 0o7777) == "0o755"
    assert oct((root / "bpfoom.service").stat().st_mode & 0o7777) == "0o644"
    assert not [name for name in os.listdir(root) if name.startswith(".bpfoom-")]     # no temporary left


def test_a_second_converge_changes_nothing_and_calls_no_systemctl_action(root):
    converge(FakeModule(active=False, enabled=False))
    module = FakeModule()
    plan = converge(module)
    assert not plan["changed"] and plan["files_changed"] == [] and changed_systemctl(module) == []


def test_a_new_program_restarts_a_running_agent_without_a_daemon_reload(root):
    converge(FakeModule(active=False, enabled=False))
    module = FakeModule()
    plan = converge(module, dict(FILES, **{"bpfoomctl.py": b"print('agent 2')\n"}))
    assert plan["files_changed"] == [str(root / "bpfoomctl.py")] and plan["restart"] and not plan["unit_changed"]
    assert changed_systemctl(module) == [["restart", "bpfoom.service"]]


def test_a_wrong_mode_is_a_change(root):
    converge(FakeModule(active=False, enabled=False))
    os.chmod(root / "bpfoom.service", 0o666)
    module = FakeModule()
    plan = converge(module)
    assert plan["files_changed"] == [str(root / "bpfoom.service")] and plan["unit_changed"]
    assert changed_systemctl(module) == [["daemon-reload"], ["restart", "bpfoom.service"]]    # its new sandbox
    assert oct((root / "bpfoom.service").stat().st_mode & 0o7777) == "0o644"


def test_check_mode_predicts_and_writes_nothing(root, monkeypatch):
    monkeypatch.setattr(agent_host, "bpffs_mounted", lambda: False)
    module = FakeModule(active=False, enabled=False)
    plan = converge(module, check=True)
    assert plan["changed"] and plan["mount_bpffs"] and plan["start"] and len(plan["digests"]) == 3
    assert changed_systemctl(module) == [] and not (root / "bpfoomctl.py").exists()


def test_bpffs_is_mounted_when_missing(root, monkeypatch):
    converge(FakeModule(active=False, enabled=False))
    monkeypatch.setattr(agent_host, "bpffs_mounted", lambda: False)
    module = FakeModule()
    assert converge(module)["mount_bpffs"]
    assert ["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"] in module.commands

"""agent_host: converging the agent's files, unit, bpffs and service, against a temporary root.

systemctl and mount are recorded, not run; files are really written (as root,
like the module on a host), so modes, owners and the no-change second run are real.
"""

import os

import pytest

from ansible_collections.bpfoom.fleet.plugins.module_utils import agent_host

FILES = {"bpfoomctl/cli.py": b"print('agent')\n", "bpfoomctl/contract.py": b"X = 1\n", "bpfoomctl": b"#!/bin/sh\n",
         "bpfoom.service": b"[Unit]\n"}
PROGRAM = "usr/local/lib/bpfoom/bpfoomctl/cli.py"
SHIM = "usr/local/sbin/bpfoomctl"
UNIT = "etc/systemd/system/bpfoom.service"


class FakeModule:
    def __init__(self, active=True, enabled=True):
        self.commands = []
        self.state = {"is-active": active, "is-enabled": enabled}

    def get_bin_path(self, name):
        return f"/bin/{name}"

    def run_command(self, argv, environ_update=None):
        self.commands.append(argv[1:] if argv[0] == "/bin/systemctl" else argv)
        if argv[1:3] == ["show", "bpfoom.service"]:
            return 0, (f"UnitFileState={'enabled' if self.state['is-enabled'] else 'disabled'}\n"
                       f"ActiveState={'active' if self.state['is-active'] else 'inactive'}\n"), ""
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
    monkeypatch.setattr(agent_host.kernel, "bpffs_mounted", lambda: True)
    return tmp_path


def converge(module, files=None, check=False, root=None):
    return agent_host.AgentHost(module, str(root or ROOT[0])).converge(files or FILES, check)


ROOT = []


@pytest.fixture(autouse=True)
def _root_for_converge(tmp_path):
    ROOT[:] = [tmp_path]


def changed_systemctl(module):
    return [command for command in module.commands if command[0] != "show"]


def test_a_first_install_writes_every_file_and_starts_the_agent(root):
    module = FakeModule(active=False, enabled=False)
    plan = converge(module)
    assert plan["changed"] and len(plan["files_changed"]) == 4
    assert plan["unit_changed"] and plan["enable"] and plan["start"] and not plan["restart"]
    assert changed_systemctl(module) == [["daemon-reload"], ["enable", "bpfoom.service"], ["start", "bpfoom.service"]]
    assert (root / PROGRAM).read_bytes() == FILES["bpfoomctl/cli.py"]
    assert oct((root / PROGRAM).stat().st_mode & 0o7777) == "0o644"
    assert oct((root / SHIM).stat().st_mode & 0o7777) == "0o755"
    assert oct((root / UNIT).stat().st_mode & 0o7777) == "0o644"
    assert not [name for _dir, _subdirs, names in os.walk(root) for name in names if name.startswith(".bpfoom-")]


def test_a_second_converge_changes_nothing_and_calls_no_systemctl_action(root):
    converge(FakeModule(active=False, enabled=False))
    module = FakeModule()
    plan = converge(module)
    assert not plan["changed"] and plan["files_changed"] == [] and changed_systemctl(module) == []


def test_a_new_program_restarts_a_running_agent_without_a_daemon_reload(root):
    converge(FakeModule(active=False, enabled=False))
    module = FakeModule()
    plan = converge(module, dict(FILES, **{"bpfoomctl/cli.py": b"print('agent 2')\n"}))
    assert plan["files_changed"] == [str(root / PROGRAM)] and plan["restart"] and not plan["unit_changed"]
    assert changed_systemctl(module) == [["restart", "bpfoom.service"]]


def test_a_changed_unit_is_shown_as_text_and_the_program_as_checksums(root):
    converge(FakeModule(active=False, enabled=False))
    unit = b"[Unit]\n[Service]\nRestartSec=10\n"
    plan = converge(FakeModule(), dict(FILES, **{"bpfoom.service": unit, "bpfoomctl/cli.py": b"print(2)\n"}), check=True)
    assert plan["texts"] == {str(root / UNIT): ("[Unit]\n", unit.decode())}          # what diff mode shows
    assert set(plan["digests"]) == {str(root / UNIT), str(root / PROGRAM)}
    assert agent_host.text_diffs(plan["texts"]) == [{"before_header": str(root / UNIT), "after_header": str(root / UNIT),
                                                     "before": "[Unit]\n", "after": unit.decode()}]
    assert (root / UNIT).read_text() == "[Unit]\n"                                   # check mode wrote nothing


def test_a_new_journal_catalog_is_indexed_for_journalctl(root):
    converge(FakeModule(active=False, enabled=False))
    module = FakeModule()
    plan = converge(module, dict(FILES, **{"bpfoom.catalog": b"-- 3f9d5c1e8a2b4f6d9e0c7a1b2d3e4f50\nSubject: x\n"}))
    assert plan["catalog_changed"] and str(root / "usr/local/lib/systemd/catalog/bpfoom.catalog") in plan["files_changed"]
    assert ["/bin/journalctl", "--update-catalog"] in module.commands
    assert converge(FakeModule(), dict(FILES, **{"bpfoom.catalog": b"-- 3f9d5c1e8a2b4f6d9e0c7a1b2d3e4f50\nSubject: x\n"}))[
        "changed"] is False                                                         # and a second run does nothing


def test_a_wrong_mode_is_a_change(root):
    converge(FakeModule(active=False, enabled=False))
    os.chmod(root / UNIT, 0o666)
    module = FakeModule()
    plan = converge(module)
    assert plan["files_changed"] == [str(root / UNIT)] and plan["unit_changed"]
    assert changed_systemctl(module) == [["daemon-reload"], ["restart", "bpfoom.service"]]    # its new sandbox
    assert oct((root / UNIT).stat().st_mode & 0o7777) == "0o644"


def test_check_mode_predicts_and_writes_nothing(root, monkeypatch):
    monkeypatch.setattr(agent_host.kernel, "bpffs_mounted", lambda: False)
    module = FakeModule(active=False, enabled=False)
    plan = converge(module, check=True)
    assert plan["changed"] and plan["mount_bpffs"] and plan["start"] and len(plan["digests"]) == 4
    assert changed_systemctl(module) == [] and not (root / PROGRAM).exists()


def test_bpffs_is_mounted_when_missing(root, monkeypatch):
    converge(FakeModule(active=False, enabled=False))
    monkeypatch.setattr(agent_host.kernel, "bpffs_mounted", lambda: False)
    module = FakeModule()
    assert converge(module)["mount_bpffs"]
    assert ["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"] in module.commands


def test_an_older_layout_and_a_module_that_is_gone_are_removed(root):
    converge(FakeModule(active=False, enabled=False))
    old = root / "usr/local/lib/bpfoom"
    (old / "__pycache__").mkdir(parents=True)
    (old / "bpfoomctl.py").write_text("the one-file agent\n")
    (old / "__pycache__" / "bpfoomctl.cpython-311.pyc").write_bytes(b"\0")
    (old / "bpfoomctl" / "gone.py").write_text("a module of an older package\n")
    module = FakeModule(active=True, enabled=True)
    plan = converge(module)
    removed = ("bpfoomctl.py", "__pycache__", "bpfoomctl/gone.py")
    assert sorted(plan["files_removed"]) == sorted(str(old / name) for name in removed)
    assert plan["restart"] and sorted(os.listdir(old)) == ["bpfoomctl"]
    assert sorted(os.listdir(old / "bpfoomctl")) == ["cli.py", "contract.py"]
    assert not converge(FakeModule())["changed"]                                  # and then nothing to do


@pytest.mark.parametrize("name", ["bpfoomctl/../evil.py", "bpfoomctl/sub/x.py", "other.py", "bpfoomctl/x.sh"])
def test_a_file_name_with_no_place_on_the_host_is_refused(name):
    with pytest.raises(ValueError, match="has no place on the host"):
        agent_host.install_path(name)


@pytest.mark.parametrize("rc, failure, hook_missing", [(3, "no_hook", True), (9, "no_shadow_points", False),
                                                       (10, "no_btf", False), (4, "verifier", False)])
def test_each_exit_code_of_the_agent_is_reported_by_its_meaning(monkeypatch, rc, failure, hook_missing):
    """A shadow-mode refusal on a kernel without the attach points is not a missing hook."""
    monkeypatch.setattr(agent_host.os.path, "exists", lambda path: True)

    class Agent(FakeModule):
        def run_command(self, argv, environ_update=None):
            return rc, '{"failed": true, "rc": %d, "msg": "refused"}' % rc, ""

    with pytest.raises(AssertionError) as failed:
        agent_host.run_bpfoomctl(Agent(), "apply", "--mode=shadow", "/p")
    result = failed.value.args[0]
    assert (result["agent_failure"], result["hook_missing"], result["rc"]) == (failure, hook_missing, rc)


@pytest.mark.parametrize("manager, packages", [("apt", ["libbpf1"]), ("dnf", ["libbpf"]), ("yum", ["libbpf"]),
                                               ("zypper", ["libbpf"]), (None, ["libbpf"])])
def test_libbpf_is_named_as_the_package_manager_names_it(manager, packages):
    assert agent_host.libbpf_packages(manager) == packages
    assert agent_host.libbpf_missing_message(manager).startswith(f"libbpf.so.1 is missing: install {packages[0]} (")


def test_a_unit_that_does_not_start_is_reported_in_the_agent_s_words(root):
    """systemctl says only "see journalctl": the failure names what the agent said there, its JSON answer, above
    systemd's own lines."""
    journal = "\n".join([
        "libbpf: prog 'bpfoom_shadow_candidate': failed to load: -22",
        '{"failed": true, "rc": 4, "msg": "the kernel\'s verifier rejected policy \'web\' (Invalid argument): '
        'this kernel is locked down (lockdown=confidentiality, ...)"}',
        "bpfoom.service: Control process exited, code=exited, status=4/n/a",
        "bpfoom.service: Failed with result 'exit-code'.",
        "Failed to start bpfoom.service - bpfoom BPF OOM policy agent.",
        "bpfoom.service: Consumed 1.400s CPU time."])

    class Failing(FakeModule):
        def run_command(self, argv, environ_update=None):
            super().run_command(argv, environ_update)
            if argv[1] == "start":
                return 1, "", "Job for bpfoom.service failed because the control process exited with error code."
            return (0, journal, "") if argv[0] == "/bin/journalctl" else FakeModule.run_command(self, argv)

    with pytest.raises(AssertionError) as failure:
        converge(Failing(active=False, enabled=False))
    msg = failure.value.args[0]["msg"]
    assert msg.startswith("systemctl start bpfoom.service failed (rc=1): Job for bpfoom.service failed")
    assert msg.endswith("the agent says (journalctl -u bpfoom.service): the kernel's verifier rejected policy 'web' "
                        "(Invalid argument): this kernel is locked down (lockdown=confidentiality, ...)"), msg


def test_a_result_keeps_the_names_of_the_payload_not_its_contents():
    params = {"mode": "enforce", "policy_object": "QUJD" * 100, "manifest": {"hash": "ab" * 32, "name": "web"},
              "agent_files": {"bpfoomctl/cli.py": "eA==" * 50}}
    assert agent_host.without_payload(params) == {
        "mode": "enforce", "policy_object": "(400 characters of base64, left out)",
        "manifest": "(policy abababababab's manifest, left out)",
        "agent_files": {"bpfoomctl/cli.py": "(200 characters of base64, left out)"}}
    assert agent_host.without_payload({"rollback_from": "ab", "agent_files": None}) == {"rollback_from": "ab",
                                                                                        "agent_files": None}


@pytest.mark.parametrize("shown, state", [
    ("UnitFileState=enabled\nActiveState=active\n", (True, True)),
    ("UnitFileState=disabled\nActiveState=activating\n", (False, False)),
    ("UnitFileState=masked\nActiveState=failed\n", (False, False)),
    ("UnitFileState=static\nActiveState=reloading\n", (True, True)),
    ("", (False, False)),                                       # systemd does not know the unit
])
def test_the_units_state_is_read_in_one_systemctl_call(shown, state):
    class Shown(FakeModule):
        def run_command(self, argv, environ_update=None):
            self.commands.append(argv[1:])
            return 0, shown, ""
    module = Shown()
    assert agent_host.AgentHost(module).unit_state() == state
    assert module.commands == [["show", "bpfoom.service", "--property=UnitFileState", "--property=ActiveState"]]

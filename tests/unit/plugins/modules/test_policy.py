"""policy: the module's decisions (present, absent, rollback_from x hook or none x check x diff) with a faked agent.

The kernel and the real agent are the lab tier's (tests/kernel/test_agent.py);
here bpfoomctl is a fake that keeps the state a host would have, so that every
decision is checked, with what the module asked the agent to do.
"""

import base64
import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.bpfoom.fleet.plugins.modules import policy

WEB = {"policy_name": "web", "policy_hash": "a" * 64, "mode": "enforce"}
WEB_NEXT = {"policy_name": "web_next", "policy_hash": "b" * 64, "mode": "enforce"}
WEB_SHADOW = dict(WEB, mode="shadow")
FACTS = {"kernel_release": "6.12.117-bpfoom", "hook": True, "libbpf_version": "1.1",
         "hook_functions": dict.fromkeys(("bpf_oom_evaluate_task", "bpf_set_policy_name", "set_oom_policy_name"), True)}
NO_HOOK = dict(FACTS, hook=False, kernel_release="6.12.117-unpatched",
               hook_functions=dict(FACTS["hook_functions"], bpf_oom_evaluate_task=False))


class FakeAgent:
    """bpfoomctl as the module sees it: status, apply, rollback, detach over a host's state."""

    def __init__(self, attached=None, good=(), kernel_disagrees=False):
        self.attached = attached
        self.desired = attached and (attached["policy_hash"], attached["mode"])
        self.good = list(good)
        self.kernel_disagrees = kernel_disagrees
        self.commands = []

    def rollback_target(self):
        earlier = [identity for identity in self.good if (identity["policy_hash"], identity["mode"]) != self.desired]
        return earlier[-1] if earlier else None

    def status(self):
        policies = [dict(self.attached, managed=True, attached=True, links=[{"link_id": 1}], evaluations=7,
                         selections=2)] if self.attached else []
        return {"attached_policy": self.attached, "desired_hash": self.desired and self.desired[0],
                "desired_mode": self.desired and self.desired[1], "policies": policies,
                "rollback_target": self.rollback_target()}

    def _run(self, identity):
        self.attached = WEB_NEXT if self.kernel_disagrees else identity
        self.desired = (identity["policy_hash"], identity["mode"])
        self.good = [g for g in self.good if g != identity] + [identity]

    def __call__(self, module, *args, result=None):
        self.commands.append(args[0])
        if args[0] == "status":
            return self.status()
        if args[0] == "apply":
            with open(f"{args[-1]}/manifest.json") as handle:
                manifest = json.load(handle)
            mode = args[1].split("=")[1]
            self.commands[-1] = f"apply {mode}"
            self._run({"policy_name": manifest["name"], "policy_hash": manifest["hash"], "mode": mode})
        elif args[0] == "rollback":
            self._run(self.rollback_target())
        elif args[0] == "detach":
            self.attached = self.desired = None
        return {"changed": True, "notes": []}


UNIT_PATH = "/etc/systemd/system/bpfoom.service"


class FakeAgentHost:
    """The agent's files and service: already converged unless told otherwise."""

    files_differ = False
    check_modes = []

    def __init__(self, module):
        pass

    def converge(self, files, check_mode):
        FakeAgentHost.check_modes.append(check_mode)
        changed = ["/usr/local/lib/bpfoom/bpfoomctl/cli.py", UNIT_PATH] if self.files_differ else []
        return {"changed": bool(changed), "files_changed": changed,
                "digests": {path: (None, "c" * 64) for path in changed},
                "texts": {UNIT_PATH: ("", "[Service]\nRestartSec=5\n")} if self.files_differ else {},
                "unit_changed": False, "enable": False, "start": False, "restart": False, "mount_bpffs": False}


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A host with the hook, libbpf and the agent; set .agent, .facts, .installed, .files_differ to vary it."""
    class Host:
        agent = FakeAgent()
        facts = FACTS
        installed = True

    monkeypatch.setattr(policy, "host_facts", lambda: Host.facts)
    monkeypatch.setattr(policy, "agent_installed", lambda: Host.installed)
    monkeypatch.setattr(policy, "package_manager", lambda: "apt")
    monkeypatch.setattr(policy, "run_bpfoomctl", lambda module, *args, result=None: Host.agent(module, *args, result=result))
    monkeypatch.setattr(policy, "AgentHost", FakeAgentHost)
    monkeypatch.setattr(policy, "INCOMING_DIR", str(tmp_path / "incoming"))
    FakeAgentHost.files_differ, FakeAgentHost.check_modes = False, []
    return Host


def present(identity, **extra):
    manifest = {"name": identity["policy_name"], "hash": identity["policy_hash"], "host_inputs": []}
    return dict({"manifest": manifest, "policy_object": base64.b64encode(b"\x7fELF").decode(), "agent_files": {}},
                **extra)


def run(capsys, args, check=False, diff=False):
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=diff)), pytest.raises(SystemExit):
        policy.main()
    return json.loads(capsys.readouterr().out)


def test_present_attaches_and_reads_the_kernel_back(capsys, host):
    result = run(capsys, present(WEB))
    assert result["changed"] and (result["policy_name"], result["policy_hash"]) == (WEB["policy_name"], WEB["policy_hash"])
    assert result["previous"] is None and result["links"] == [{"link_id": 1}] and result["evaluations"] == 7
    assert host.agent.commands == ["status", "apply enforce", "status"]       # the read-back is a status of its own


def test_present_with_the_policy_attached_changes_nothing(capsys, host):
    host.agent = FakeAgent(attached=WEB)
    result = run(capsys, present(WEB))
    assert not result["changed"] and result["policy_name"] == "web"
    assert host.agent.commands == ["status"]


def test_changed_agent_files_alone_are_a_change(capsys, host):
    host.agent = FakeAgent(attached=WEB)
    FakeAgentHost.files_differ = True
    result = run(capsys, present(WEB), diff=True)
    assert result["changed"] and result["files_changed"] == ["/usr/local/lib/bpfoom/bpfoomctl/cli.py", UNIT_PATH]
    assert host.agent.commands == ["status"]                           # no policy swap for new agent files
    assert "file /usr/local/lib/bpfoom/bpfoomctl/cli.py: absent" in result["diff"][0]["before"]
    assert f"file /usr/local/lib/bpfoom/bpfoomctl/cli.py: {'c' * 64}" in result["diff"][0]["after"]
    # The unit as text, as ansible.builtin.template shows a file: a changed RestartSec= is a changed line.
    assert result["diff"][1] == {"before_header": UNIT_PATH, "after_header": UNIT_PATH,
                                 "before": "", "after": "[Service]\nRestartSec=5\n"}


def test_check_mode_predicts_the_swap_and_runs_only_status(capsys, host):
    host.agent = FakeAgent(attached=WEB)
    result = run(capsys, present(WEB_NEXT), check=True, diff=True)
    assert result["changed"] and result["policy_name"] == "web_next" and result["previous"] == WEB
    assert result["links"] == [] and result["evaluations"] is None      # nothing of the policy it would replace
    assert result["diff"][0]["before"].startswith("policy_name: web\n")
    assert result["diff"][0]["after"].startswith("policy_name: web_next\n")
    assert host.agent.commands == ["status"] and FakeAgentHost.check_modes == [True]
    assert host.agent.attached == WEB


def test_check_mode_on_a_host_without_the_agent_predicts_without_asking_it(capsys, host):
    host.installed = False
    result = run(capsys, present(WEB), check=True)
    assert result["changed"] and result["policy_name"] == "web" and result["previous"] is None
    assert host.agent.commands == []


@pytest.mark.parametrize("check", [False, True])
def test_a_kernel_without_the_hook_fails_or_is_skipped_and_nothing_is_done(capsys, host, check):
    host.facts = NO_HOOK
    failed = run(capsys, present(WEB), check=check)
    assert failed["failed"] and failed["hook_missing"] and not failed["changed"]
    assert "6.12.117-unpatched has no BPF OOM hook (bpf_oom_evaluate_task not in its BTF)" in failed["msg"]
    skipped = run(capsys, present(WEB, unpatched="skip"), check=check)
    assert not skipped.get("failed") and not skipped["changed"] and skipped["hook"] is False
    assert host.agent.commands == [] and FakeAgentHost.check_modes == []


def test_a_host_without_libbpf_is_told_in_the_same_call(capsys, host):
    host.facts = dict(FACTS, libbpf_version=None)
    result = run(capsys, present(WEB))
    assert result["failed"] and result["libbpf_missing"] and result["package_manager"] == "apt"
    assert "install libbpf1" in result["msg"] and not result["changed"]
    assert host.agent.commands == [] and FakeAgentHost.check_modes == []


def test_a_kernel_that_disagrees_after_the_apply_fails_the_task(capsys, host):
    host.agent = FakeAgent(kernel_disagrees=True)
    result = run(capsys, present(WEB))
    assert result["failed"] and "the kernel reports 'policy_name: web_next" in result["msg"], result["msg"]


@pytest.mark.parametrize("check", [False, True])
def test_absent_detaches_once(capsys, host, check):
    host.agent = FakeAgent(attached=WEB)
    result = run(capsys, {"state": "absent"}, check=check, diff=True)
    assert result["changed"] and result["policy_name"] is None and result["previous"] == WEB
    assert result["diff"][0]["after"] == "none (the kernel's own choice)\n"
    assert host.agent.commands == (["status"] if check else ["status", "detach", "status"])
    if not check:
        assert not run(capsys, {"state": "absent"})["changed"]


def test_absent_without_the_agent_is_unchanged(capsys, host):
    host.installed = False
    result = run(capsys, {"state": "absent"})
    assert not result["changed"] and "no agent on this host" in result["notes"][0] and host.agent.commands == []


def test_absent_on_a_kernel_without_the_hook_detaches_its_shadow_policy(capsys, host):
    host.facts, host.agent = NO_HOOK, FakeAgent(attached=WEB_SHADOW)
    result = run(capsys, {"state": "absent"})
    assert result["changed"] and result["previous"] == WEB_SHADOW
    assert host.agent.commands == ["status", "detach", "status"]
    assert not run(capsys, {"state": "absent"})["changed"]


def test_unpatched_shadow_runs_the_policy_in_shadow_mode_then_changes_nothing(capsys, host):
    host.facts = NO_HOOK
    result = run(capsys, present(WEB, unpatched="shadow"))
    assert result["changed"] and result["mode"] == "shadow" and "runs in shadow mode" in result["notes"][0]
    assert host.agent.commands == ["status", "apply shadow", "status"]
    assert not run(capsys, present(WEB, unpatched="shadow"))["changed"]


def test_the_same_policy_in_the_other_mode_is_a_change(capsys, host):
    host.agent = FakeAgent(attached=WEB_SHADOW)
    result = run(capsys, present(WEB), diff=True)
    assert result["changed"] and result["mode"] == "enforce" and result["previous"] == WEB_SHADOW
    assert "mode: shadow" in result["diff"][0]["before"] and "mode: enforce" in result["diff"][0]["after"]
    assert host.agent.commands == ["status", "apply enforce", "status"]
    assert not run(capsys, present(WEB))["changed"]
    assert run(capsys, present(WEB, mode="shadow"))["mode"] == "shadow"


def test_rollback_from_steps_back_once_then_changes_nothing(capsys, host):
    host.agent = FakeAgent(attached=WEB_NEXT, good=[WEB, WEB_NEXT])
    predicted = run(capsys, {"rollback_from": WEB_NEXT["policy_hash"]}, check=True)
    assert predicted["changed"] and predicted["policy_name"] == "web" and host.agent.attached == WEB_NEXT
    result = run(capsys, {"rollback_from": WEB_NEXT["policy_hash"]})
    assert result["changed"] and result["policy_name"] == "web" and result["previous"] == WEB_NEXT
    host.agent.commands = []
    again = run(capsys, {"rollback_from": WEB_NEXT["policy_hash"]})
    assert not again["changed"] and again["policy_name"] == "web" and host.agent.commands == ["status"]


def test_rollback_from_a_policy_with_nothing_before_it_fails_unchanged(capsys, host):
    host.agent = FakeAgent(attached=WEB, good=[WEB])
    result = run(capsys, {"rollback_from": WEB["policy_hash"]})
    assert result["failed"] and "nothing to roll back to" in result["msg"] and not result["changed"]
    assert host.agent.attached == WEB and host.agent.commands == ["status"]


def test_rollback_from_a_policy_the_host_never_ran_changes_nothing(capsys, host):
    host.agent = FakeAgent()
    result = run(capsys, {"rollback_from": WEB_NEXT["policy_hash"]})
    assert not result["changed"] and result["policy_name"] is None and host.agent.commands == ["status"]


def test_rollback_on_a_host_without_the_agent_installs_nothing(capsys, host):
    host.installed = False
    result = run(capsys, {"rollback_from": WEB_NEXT["policy_hash"], "agent_files": {}})
    assert not result["changed"] and result["notes"] == ["no agent on this host: no bpfoom policy to roll back"]
    assert host.agent.commands == [] and FakeAgentHost.check_modes == []

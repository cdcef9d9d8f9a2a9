"""Lab tier of issue 24: the shipped alert rules on a real monitoring path.

On nohook1 (a kernel without the hook: shadow mode) the agent writes its metrics file, the host's own
node_exporter (Debian's prometheus-node-exporter, in the image) serves it through its textfile
collector, and a real Prometheus on the controller (Debian's binary, run by this test, by PID, on a
loopback port) scrapes it through an SSH port forward and evaluates prometheus/bpfoom.rules.yml as
shipped. A shadow policy that disagrees with the kernel's choice makes BpfoomShadowDisagrees fire,
read from Prometheus' own API (/api/v1/alerts).
"""

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from fleetlab import common, fleet, prometheus
from test_agent import PREFER_B, play
from test_shadow import SCENARIO

pytestmark = pytest.mark.lab

NODE_EXPORTER_PORT = 9100          # Debian's default
RULES = common.REPO_ROOT / "prometheus" / "bpfoom.rules.yml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(port: int, path: str, **query) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def wait(what: str, check, timeout: float = 90):
    """check()'s first true answer; fails naming `what` and the last answer after timeout seconds."""
    deadline, answer = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            answer = check()
        except OSError as error:          # Prometheus still starting, the forward not up yet
            answer = error
        if answer and not isinstance(answer, OSError):
            return answer
        time.sleep(2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {answer})")


@pytest.fixture
def monitored(lab, _unpatched, agent_lab, tmp_path):
    """nohook1 running prefer_b in shadow mode, scraped by a Prometheus of the test's own: its API port."""
    name = "nohook1"
    host = lab[name]
    process, results = play(agent_lab, "apply_policy.yml", name, policy=dict(PREFER_B, mode="shadow"))
    assert process.returncode == 0 and results["Run the policy"][name]["mode"] == "shadow"
    fleet.run_on(host, "systemctl restart bpfoom.service; systemctl is-active prometheus-node-exporter.service")
    exporter, prometheus_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "node", "static_configs": [
            {"targets": [f"127.0.0.1:{exporter}"], "labels": {"instance": name}}]}]}))
    forward = subprocess.Popen(fleet.port_forward_command(host, exporter, NODE_EXPORTER_PORT), stdin=subprocess.DEVNULL)
    with open(tmp_path / "prometheus.log", "w") as log:
        server = subprocess.Popen([str(prometheus.binaries() / "prometheus"),
                                   f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'data'}",
                                   f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        yield prometheus_port
    finally:
        for child in (server, forward):
            child.terminate()
            child.wait(timeout=30)
        play(agent_lab, "apply_policy.yml", name, policy=PREFER_B, state="absent")


def test_a_disagreeing_shadow_oom_fires_the_shipped_alert_in_a_real_prometheus(monitored, _unpatched):
    port = monitored

    def rules_loaded():
        return {rule["name"] for group in api(port, "rules")["groups"] for rule in group["rules"]}
    assert wait("Prometheus loads the shipped rules", rules_loaded) >= {
        "BpfoomPolicyNotAttached", "BpfoomAgentSilent", "BpfoomShadowDisagrees", "BpfoomShadowWouldFindNoVictim",
        "BpfoomPolicyNamesNothingHere"}

    def disagreements():
        result = api(port, "query", query='bpfoom_shadow_outcomes_total{outcome="disagree"}')["result"]
        return result and float(result[0]["value"][1])
    # The counter is scraped before the OOM (at 0), so increase() sees it rise, as on a monitored host.
    wait("node_exporter serves the agent's shadow counters", lambda: disagreements() == 0 or None)
    assert api(port, "query", query="bpfoom_policy_desired")["result"][0]["value"][1] == "1"
    assert api(port, "alerts")["alerts"] == []                    # a shadow policy attached as desired: quiet

    def value(query):
        result = api(port, "query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None
    [kills_before] = wait("node_exporter serves the kernel's OOM kill count",           # 0 is an answer too
                          lambda: [kills] if (kills := value("node_vmstat_oom_kill")) is not None else None)
    outcome = _unpatched.oom(96, SCENARIO)
    assert outcome["victim"] == "hog_a", outcome                  # the kernel's choice, not the policy's hog_b
    # Kills and invocations apart: one victim is one kill in the kernel's own count, however many runs of the
    # OOM killer the policy saw while it exited (bpfoom_ooms_total).
    wait("the kernel's count says one kill", lambda: value("node_vmstat_oom_kill") == kills_before + 1 or None)
    assert wait("the agent counts the OOM", lambda: value("bpfoom_ooms_total")) >= 1

    def firing():
        return [alert for alert in api(port, "alerts")["alerts"]
                if alert["labels"]["alertname"] == "BpfoomShadowDisagrees" and alert["state"] == "firing"]
    [alert] = wait("BpfoomShadowDisagrees fires", firing)
    assert alert["labels"]["instance"] == "nohook1" and alert["labels"]["severity"] == "info", alert
    assert "journalctl MESSAGE_ID=ae88e7a08fc5414d9acc8d0ab4a2b9a4" in alert["annotations"]["description"], alert
    others = {a["labels"]["alertname"] for a in api(port, "alerts")["alerts"]} - {"BpfoomShadowDisagrees"}
    assert others == set(), others

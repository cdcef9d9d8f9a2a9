"""The agent role mirrors the modules' contract: its defaults are the agent options' defaults."""

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import AGENT_OPTIONS
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.agent_payload import agent_options

ROLE = Path(__file__).resolve().parents[3] / "roles" / "agent"


def test_role_defaults_and_argument_specs_match_the_agent_options():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for option, spec in AGENT_OPTIONS.items():
        assert defaults[f"agent_{option}"] == spec["default"], option
        assert specs[f"agent_{option}"]["default"] == spec["default"], option


def test_a_relative_or_quoted_metrics_file_is_refused_naming_the_option():
    assert agent_options({"metrics_file": ""})["metrics_file"] == ""                    # no metrics
    assert agent_options({})["metrics_file"] == "/var/lib/prometheus/node-exporter/bpfoom.prom"
    for wrong in ("bpfoom.prom", "/var/lib/my metrics/bpfoom.prom", '/tmp/"x'):
        with pytest.raises(AnsibleActionFail, match="agent.metrics_file: .* is not an absolute path"):
            agent_options({"metrics_file": wrong})

"""The agent role mirrors the modules' contract: its defaults are the agent options' defaults."""

from pathlib import Path

import yaml

from ansible_collections.bpfoom.fleet.plugins.module_utils.agent_host import AGENT_OPTIONS

ROLE = Path(__file__).resolve().parents[3] / "roles" / "agent"


def test_role_defaults_and_argument_specs_match_the_agent_options():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for option, spec in AGENT_OPTIONS.items():
        assert defaults[f"agent_{option}"] == spec["default"], option
        assert specs[f"agent_{option}"]["default"] == spec["default"], option

"""Compile tier: every compiled policy holds the programs and maps the agent's contract names, attached where
the contract says (plugins/module_utils/bpfoomctl/contract.py against templates/bpf/frame.bpf.c.j2).

A program or map renamed on one side only would otherwise break only on a lab kernel, at load time. Read from
the object's ELF (binutils' readelf): a program is a global function in its own section, named by its
attach point (fentry/FUNCTION, ...); a map is an object of .maps, or one of libbpf's internal maps
(.rodata.*, .data.*, .bss), named by its section.
"""

import json
import re
import subprocess

import pytest

from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import contract
from policytools import EXAMPLES, build_policy

SECTION_PREFIX = {"modify_return": "fmod_ret", "trace_fentry": "fentry", "trace_fexit": "fexit"}


def elf_names(obj):
    """({program: its section}, {map names}) of a BPF object."""
    sections = {}
    for number, name in re.findall(r"^\s*\[\s*(\d+)\]\s+(\S+)", subprocess.run(
            ["readelf", "-SW", str(obj)], capture_output=True, text=True, check=True).stdout, re.MULTILINE):
        sections[number] = name
    programs, maps = {}, {name for name in sections.values() if re.match(r"\.(rodata|data|bss)\b", name)}
    for kind, bind, index, name in re.findall(r"^\s*\d+:\s+\S+\s+\d+\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S+)$",
                                              subprocess.run(["readelf", "-sW", str(obj)], capture_output=True,
                                                             text=True, check=True).stdout, re.MULTILINE):
        section = sections.get(index, "")
        if kind == "FUNC" and bind == "GLOBAL" and section not in (".text", ""):
            programs[name] = section
        elif kind == "OBJECT" and section == ".maps":
            maps.add(name)
    return programs, maps


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def built(request, tmp_path_factory):
    entry = build_policy(EXAMPLES[request.param], tmp_path_factory.mktemp("objects"))
    manifest = json.loads((entry / "manifest.json").read_text())
    return elf_names(entry / "policy.bpf.o"), manifest


def test_the_programs_are_the_contracts(built):
    (programs, _maps), _manifest = built
    assert set(programs) == contract.PROGRAMS


def test_each_mode_attaches_where_the_contract_says(built):
    (programs, _maps), _manifest = built
    for mode, links in contract.MODES.items():
        for name, link in links.items():
            assert programs[name] == f"{SECTION_PREFIX[link.attach_type]}/{link.target}", (mode, name)
    assert programs[contract.EXPLAIN_PROGRAM] == "iter/task"


def test_the_maps_the_agent_opens_by_name_are_there(built):
    (_programs, maps), manifest = built
    assert contract.MAPS <= maps, contract.MAPS - maps
    assert {host_input["map"] for host_input in manifest.get("host_inputs", [])} <= maps

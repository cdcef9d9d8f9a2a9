"""Compile tier: the structures the policy's BPF C and the agent share have one layout.

bpfoom_core.h declares them for the policy; the agent's abi.py declares them as ctypes types. Both are read
here: the C side as clang laid it out, from a compiled policy's debug info (pahole; the event type is
only a pointer's target, which BTF leaves out), the Python side from the ctypes fields.
"""

import ctypes
import re
import subprocess

import pytest

from ansible_collections.bpfoom.fleet.plugins.module_utils.bpfoomctl import abi
from policytools import EXAMPLES, build_policy

SHARED = {"bpfoom_identity": abi.Identity, "bpfoom_counters": abi.Counters,
          "bpfoom_event": abi.Event, "bpfoom_shadow_record": abi.ShadowRecord,
          "bpfoom_candidate": abi.Candidate, "bpfoom_basis": abi.Basis, "bpfoom_unit": abi.Unit}


def btf_layout(obj, struct):
    """[(member, offset, size)] and the struct's size, as clang laid them out."""
    text = subprocess.run(["pahole", "-F", "dwarf", "-C", struct, str(obj)], capture_output=True, text=True,
                          check=True).stdout
    members = [(name, int(offset), int(size)) for name, offset, size in
               re.findall(r"^\s+.*?\b(\w+)(?:\[\d+\])?;\s+/\*\s+(\d+)\s+(\d+)\s+\*/", text, re.MULTILINE)]
    return members, int(re.search(r"/\* size: (\d+)", text)[1])


def ctypes_layout(structure):
    members = [(name, getattr(structure, name).offset, getattr(structure, name).size)
               for name, _type in structure._fields_]
    return members, ctypes.sizeof(structure)


@pytest.fixture(scope="module")
def policy_object(tmp_path_factory):
    return build_policy(EXAMPLES["prefer_avoid"], tmp_path_factory.mktemp("objects")) / "policy.bpf.o"


@pytest.mark.parametrize("struct", sorted(SHARED))
def test_the_agent_reads_the_layout_the_policy_writes(policy_object, struct):
    assert ctypes_layout(SHARED[struct]) == btf_layout(policy_object, struct)

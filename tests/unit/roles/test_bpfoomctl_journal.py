"""Unit tests of what bpfoomctl writes to the journal and of the kernel's info types it reads."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "roles" / "agent" / "files"))
import bpfoomctl  # noqa: E402


def parse_native(payload: bytes) -> dict:
    """journald's parser of the native protocol: NAME=value lines, or NAME\\n + length + value + \\n."""
    fields, rest = {}, payload
    while rest:
        line, _newline, after = rest.partition(b"\n")
        if b"=" in line:
            name, _equals, value = line.partition(b"=")
            fields[name.decode()], rest = value, after
        else:
            size = int.from_bytes(after[:8], "little")
            fields[line.decode()], rest = after[8:8 + size], after[8 + size + 1:]
    return fields


def test_a_chosen_process_name_cannot_forge_a_field_or_cut_the_message():
    comm = "x\nPRIORITY=0\nMESSAGE=forged"
    payload = bpfoomctl.journal_payload({"MESSAGE": f"selected {bpfoomctl.printable(comm)}[7]", "PRIORITY": 5,
                                         "BPFOOM_VICTIM_COMM": comm})
    fields = parse_native(payload)
    assert fields == {"MESSAGE": b"selected x\\nPRIORITY=0\\nMESSAGE=forged[7]", "PRIORITY": b"5",
                      "BPFOOM_VICTIM_COMM": comm.encode()}


def test_every_kind_of_entry_has_its_own_message_id():
    ids = list(bpfoomctl.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)     # 128 bits, hex, as journald wants


@pytest.mark.parametrize("structure, field, offset", [
    # Offsets of linux/bpf.h (UAPI, stable): bpf_prog_info, bpf_map_info, bpf_link_info's tracing member.
    (bpfoomctl.ProgInfo, "tag", 8), (bpfoomctl.ProgInfo, "nr_map_ids", 52), (bpfoomctl.ProgInfo, "map_ids", 56),
    (bpfoomctl.ProgInfo, "name", 64), (bpfoomctl.MapInfo, "value_size", 12), (bpfoomctl.MapInfo, "name", 24),
    (bpfoomctl.LinkInfo, "prog_id", 8), (bpfoomctl.LinkInfo, "attach_type", 16),
    (bpfoomctl.LinkInfo, "target_btf_id", 24),
])
def test_the_kernel_info_types_have_the_uapi_offsets(structure, field, offset):
    assert getattr(structure, field).offset == offset


def test_metrics_name_the_attached_policy_and_escape_its_labels(tmp_path):
    view = {"attached_policy": {"policy_name": 'we"b', "policy_hash": "ab" * 32},
            "policies": [{"attached": True, "evaluations": 12, "selections": 1}]}
    text = bpfoomctl.metrics_text(view, True, 3, 1700000000.4)
    assert f'bpfoom_policy_info{{policy_name="we\\"b",policy_hash="{"ab" * 32}",mode="enforce"}} 1' in text
    assert "\nbpfoom_policy_evaluations_total 12\n" in text and "\nbpfoom_events_logged_total 3\n" in text
    none = bpfoomctl.metrics_text({"attached_policy": None, "policies": []}, False, 0, 1700000000)
    assert "bpfoom_policy_attached 0" in none and "bpfoom_hook_present 0" in none and "policy_info" not in none
    path = tmp_path / "bpfoom.prom"
    assert bpfoomctl.write_metrics(str(path), text) and path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpfoom.prom"]            # no temporary file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not bpfoomctl.write_metrics(str(tmp_path / "missing" / "bpfoom.prom"), text)

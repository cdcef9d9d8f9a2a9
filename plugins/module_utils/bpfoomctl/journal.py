# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's journal entries, one MESSAGE_ID per kind (journalctl MESSAGE_ID=... finds them), sent in
journald's native protocol."""

from __future__ import annotations

from . import abi, inputs, kernel
from .contract import BPFFS

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MESSAGE_IDS = {
    "selection": "3f9d5c1e8a2b4f6d9e0c7a1b2d3e4f50",     # the policy selected a task (it replaced oc->chosen)
    "pins_moved": "7a4e2c9b1d8f4e3a8b6c5d4e3f2a1b09",    # bpffs was unmounted under the policy; pins moved
    "shadow": "ae88e7a08fc5414d9acc8d0ab4a2b9a4",        # a shadow policy's verdict on one OOM
    "inputs": "c0b5a3e1d7f24e8b9a6c2d1e0f3b4a57",        # what the policy's host inputs resolve to changed
}


def journal_payload(fields):
    """journald's native protocol, every field in its binary-safe form: NAME, a newline, the value's length
    (64-bit little-endian), the value, a newline. No value (a comm a process chose, like "x\\nPRIORITY=0")
    can end its field early and forge another, or cut MESSAGE."""
    payload = bytearray()
    for name, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode(errors="replace")
        payload += name.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
    return bytes(payload)


def printable(text):
    """A process name as one line of a MESSAGE: control characters escaped (the field keeps it as is)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def send(kind, fields):
    """One structured entry of a kind of MESSAGE_IDS."""
    import socket  # only the events reader needs it
    fields = dict(fields, MESSAGE_ID=MESSAGE_IDS[kind], SYSLOG_IDENTIFIER="bpfoom")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(journal_payload(fields), JOURNAL_SOCKET)


def basis_view(basis, paths=None):
    """What a rank rested on, for people: the matchers that decided (and who chose each identity), the task's
    uid, the named cgroup that matched with its owner. paths: {cgroup id: path} (or a kernel.CgroupPaths);
    by default the hierarchy as it is now."""
    matched = [name for bit, name, _who in abi.MATCHED if basis.matched & bit]
    view = {"matched": matched or ["nothing (the template's default rank)"], "uid": basis.uid}
    if basis.cgroup_id:
        paths = paths if paths is not None else kernel.cgroup_paths()
        view.update(cgroup=paths.get(basis.cgroup_id, f"cgroup id {basis.cgroup_id}"),
                    cgroup_owner=basis.cgroup_owner, cgroup_vouched=bool(basis.cgroup_vouched))
    return view


def basis_text(view):
    """A basis_view() as a phrase of a journal MESSAGE."""
    who = {name: who for _bit, name, who in abi.MATCHED}
    parts = []
    for name in view["matched"]:
        if name == "cgroup":
            parts.append(f"cgroup {view['cgroup']} (owner uid {view['cgroup_owner']}, "
                         f"{'vouched for by root' if view['cgroup_vouched'] else 'not vouched for: may not protect'})")
        elif name in who:
            parts.append(f"{name} ({who[name]})")
        else:
            parts.append(name)
    return f"rank rested on {' and '.join(parts)}; uid {view['uid']}"


def basis_fields(prefix, view):
    """A basis_view() as journal fields."""
    fields = {f"{prefix}_MATCHED": ",".join(view["matched"]), f"{prefix}_UID": view["uid"]}
    if "cgroup" in view:
        fields.update({f"{prefix}_MATCHED_CGROUP": view["cgroup"], f"{prefix}_MATCHED_CGROUP_OWNER": view["cgroup_owner"],
                       f"{prefix}_MATCHED_CGROUP_VOUCHED": int(view["cgroup_vouched"])})
    return fields


def selection_entry(event, policy, paths=None):
    """The journal entry of one task an enforcing policy selected (an abi.Event); paths: basis_view()'s."""
    comm, displaced_comm = abi.text(event.comm), abi.text(event.displaced_comm)
    displaced = f"{printable(displaced_comm)}[{event.displaced_pid}]" if event.displaced_pid else "nothing"
    basis = basis_view(event.basis, paths)
    return "selection", {
        "MESSAGE": f"bpfoom policy {policy['policy_name']} selected {printable(comm)}[{event.pid}] "
                   f"(cgroup {event.cgroup_id}), displacing {displaced}; {basis_text(basis)}",
        **basis_fields("BPFOOM_VICTIM", basis),
        "PRIORITY": 5,
        "BPFOOM_POLICY_NAME": policy["policy_name"], "BPFOOM_POLICY_HASH": policy["policy_hash"],
        "BPFOOM_VICTIM_PID": event.pid, "BPFOOM_VICTIM_COMM": comm,
        "BPFOOM_VICTIM_CGROUP_ID": event.cgroup_id, "BPFOOM_VICTIM_RANK": event.rank,
        "BPFOOM_DISPLACED_PID": event.displaced_pid, "BPFOOM_DISPLACED_COMM": displaced_comm,
    }


def shadow_entry(record, policy, paths=None):
    """The journal entry of one OOM a shadow policy saw (an abi.ShadowRecord): its choice beside the kernel's;
    paths: basis_view()'s."""
    outcome, reason = abi.SHADOW_OUTCOMES.get(record.outcome, ("not_comparable", f"outcome {record.outcome}"))
    policy_comm, kernel_comm = abi.text(record.policy_comm), abi.text(record.kernel_comm)
    mine = f"{printable(policy_comm)}[{record.policy_pid}]" if record.policy_pid else None
    kernel_choice = (f"the kernel killed {printable(kernel_comm)}[{record.kernel_pid}]" if record.kernel_pid
                     else "the kernel killed nothing")
    name = f"bpfoom policy {policy['policy_name']} (shadow)"
    if reason:
        message, priority = f"{name} cannot compare: {reason}; {kernel_choice}", 6
    elif outcome == "no_victim":
        message, priority = (f"{name} would have found no victim (enforced, this OOM would have killed nothing); "
                             f"{kernel_choice}"), 3
    else:
        message, priority = f"{name} would have killed {mine}; {kernel_choice}", 5 if outcome == "agree" else 4
    basis = basis_view(record.policy_basis, paths) if record.policy_pid else None
    if basis:
        message += f"; the policy's {basis_text(basis)}"
    return "shadow", {
        **(basis_fields("BPFOOM_POLICY_VICTIM", basis) if basis else {}),
        "MESSAGE": message, "PRIORITY": priority,
        "BPFOOM_POLICY_NAME": policy["policy_name"], "BPFOOM_POLICY_HASH": policy["policy_hash"],
        "BPFOOM_MODE": "shadow", "BPFOOM_OUTCOME": outcome, "BPFOOM_OOM": "memcg" if record.memcg else "global",
        "BPFOOM_CANDIDATES": record.candidates,
        "BPFOOM_POLICY_VICTIM_PID": record.policy_pid, "BPFOOM_POLICY_VICTIM_COMM": policy_comm,
        "BPFOOM_POLICY_VICTIM_RANK": record.policy_rank, "BPFOOM_POLICY_VICTIM_CGROUP_ID": record.policy_cgroup_id,
        "BPFOOM_KERNEL_VICTIM_PID": record.kernel_pid, "BPFOOM_KERNEL_VICTIM_COMM": kernel_comm,
        "BPFOOM_KERNEL_VICTIM_CGROUP_ID": record.kernel_cgroup_id,
    }


def inputs_entry(report, policy):
    """The journal entry of a host input that changed (a target restarted, stopped; a unit came or went)."""
    what = inputs.name_of(report)
    now = report["problem"] or (f"now PID {report['pid']}" if "target" in report else
                                "resolved to " + ", ".join(f"{n} -> {u}" for n, u in report["units"].items()))
    return "inputs", {"MESSAGE": f"bpfoom policy {policy['policy_name']}: {what}: {now}",
                      "PRIORITY": 4 if report["problem"] else 5,
                      "BPFOOM_POLICY_NAME": policy["policy_name"], "BPFOOM_POLICY_HASH": policy["policy_hash"],
                      "BPFOOM_INPUT_MAP": report["map"], "BPFOOM_INPUT": what,
                      "BPFOOM_INPUT_PID": report.get("pid") or 0, "BPFOOM_INPUT_PROBLEM": report["problem"] or ""}


def pins_moved_entry(policy_name):
    """The journal entry of pins moved to a bpffs mounted anew (daemon.guard_pins)."""
    return "pins_moved", {"MESSAGE": f"bpfoom: bpffs was unmounted under policy {policy_name}; its pins moved to "
                                     f"the bpffs mounted on {BPFFS} since", "PRIORITY": 4,
                          "BPFOOM_POLICY_NAME": policy_name}

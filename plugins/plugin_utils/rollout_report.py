# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout's report: one row per host, whatever ended the rollout.

Two callers, one row: the rollout playbook's last play (filter bpfoom.fleet.rollout_report) on
every path Ansible finishes (done, skipped, failed, unreachable, a failed canary), and the callback
bpfoom.fleet.rollout_report when the playbook never reached that play (an interrupted controller).

A host's entry, as the playbook notes it (fact _bpfoom_outcome, with host and group added):
  host, group
  outcome  done | skipped | failed | unreachable | not reached | interrupted
  step     the task it stopped at (failed, unreachable, interrupted)
  detail   why, or what changed
  kernel   a bpfoom.fleet.policy or policy_info result read from the host during this run, if any
"""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.table import aligned_table

OUTCOMES = ("done", "would apply", "skipped", "failed", "unreachable", "not reached", "interrupted")
# Outcomes that leave a host off its group's policy: they fail the run.
FAILED = ("failed", "unreachable", "interrupted")
HEADER = ["HOST", "GROUP", "RUNS NOW (kernel)", "HASH", "OUTCOME", "STEP", "DETAIL"]


def kernel_view(result, predicted=False):
    """The policy a host runs, from a policy or policy_info result; None when the kernel was not read.

    predicted: the result comes from check mode, where policy_name is the policy that would run; the
    kernel still runs the previous one.
    """
    if not isinstance(result, dict) or result.get("unreachable") or result.get("skipped") or "hook" not in result:
        return None
    if predicted:
        attached = result.get("previous") or {"policy_name": None, "policy_hash": None}
    else:
        attached = result if "policy_name" in result else result.get("attached_policy") or {}
    name, digest = attached.get("policy_name"), attached.get("policy_hash")
    return {"hook": result["hook"], "kernel_release": result.get("kernel_release"),
            "policy_name": name, "policy_hash": digest, "mode": name and attached.get("mode", "enforce")}


def host_row(entry):
    """One host's row: the fields the table prints and the JSON report carries."""
    kernel = kernel_view(entry.get("kernel"), predicted=entry["outcome"] == "would apply")
    if kernel is None:
        runs_now = "unknown (not read)"
    elif kernel["mode"] == "shadow":
        runs_now = f"{kernel['policy_name']} (shadow)"
    elif not kernel["hook"]:
        runs_now = "none (no hook)"
    else:
        runs_now = kernel["policy_name"] or "none"
    return {
        "host": entry["host"],
        "group": entry.get("group"),
        "outcome": entry["outcome"],
        "step": entry.get("step"),
        "detail": " ".join(str(entry.get("detail") or "").split()),
        "runs_now": runs_now,
        "policy_name": kernel and kernel["policy_name"],
        "policy_hash": kernel and kernel["policy_hash"],
        "mode": kernel and kernel["mode"],
        "kernel_release": kernel and kernel["kernel_release"],
        "kernel_read": kernel is not None,
    }


def report(entries, interrupted=False):
    """The report of a rollout: its rows, the table's lines, a one-line summary, the hosts that failed."""
    rows = [host_row(entry) for entry in entries]
    counts = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items(), key=_by_outcome))
    if interrupted:
        summary = f"INTERRUPTED: {summary}; every host runs its old or its new policy, bpfoom.fleet.verify reads it"
    table = aligned_table([[row["host"], row["group"], row["runs_now"], (row["policy_hash"] or "-")[:12],
                            row["outcome"], row["step"] or "-", row["detail"] or "-"] for row in rows], HEADER)
    return {"rows": rows, "table": table, "summary": summary,
            "failed": [row["host"] for row in rows if row["outcome"] in FAILED]}


def _by_outcome(item):
    return OUTCOMES.index(item[0]) if item[0] in OUTCOMES else len(OUTCOMES)

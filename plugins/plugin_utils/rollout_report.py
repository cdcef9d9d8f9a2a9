# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout's report: one row per host, whatever ended the rollout.

Two callers, one row: the rollout playbook's report plays (filters bpfoom.fleet.rollout_entries and
bpfoom.fleet.rollout_report) on every path Ansible finishes (done, skipped, failed, unreachable, a failed
canary), and the callback bpfoom.fleet.rollout_report when the playbook never reached them (an interrupted
controller).

What the rollout registers on a host (NOTED) is all its entry is made of: no task per host notes an
outcome, so that a host costs the controller its apply and nothing else (host_entry turns the results
into the outcome). A host's entry:
  host, group
  outcome  done | would apply | skipped | failed | unreachable | not reached | interrupted
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
# What playbooks/rollout.yml registers on a host: the apply (with the canary's smoke test in it), the rescue's
# note of where and why the host stopped, the kernel read after a failure.
NOTED = ("_bpfoom_applied", "_bpfoom_failure", "_bpfoom_read")


def host_entry(host, group, noted, check_mode=False, stopped_by=None):
    """A host's entry from what the rollout registered on it (noted: NOTED name -> value, absent if never set).

    stopped_by: the hosts whose batch stopped the rollout, for the hosts it never reached.
    """
    entry = {"host": host, "group": group, "kernel": noted.get("_bpfoom_read")}
    if noted.get("_bpfoom_failure"):
        return {**entry, **noted["_bpfoom_failure"]}
    applied = noted.get("_bpfoom_applied")
    if isinstance(applied, dict) and "hook" in applied and not applied.get("failed"):
        outcome, detail = rollout_detail(applied, check_mode)
        return {**entry, "outcome": outcome, "detail": detail, "kernel": applied}
    return {**entry, "outcome": "not reached",
            "detail": f"the rollout stopped after {stopped_by} failed" if stopped_by else None}


def rollout_detail(host_result, check_mode=False):
    """The rollout's outcome of one host after its apply (host_result: the policy task's result, from the apply
    again when libbpf had to be installed first, with the canary's smoke test in it): (outcome, detail)."""
    mode, previous, smoke = host_result.get("mode"), host_result.get("previous") or {}, host_result.get("smoke")
    if mode is None:
        return "skipped", f"kernel {host_result.get('kernel_release')} has no BPF OOM hook"
    if previous.get("policy_hash") != host_result.get("policy_hash"):
        detail = f"replaces {previous.get('policy_name') or 'no policy'}"
    elif previous.get("mode") != mode:
        detail = f"switches to {mode} mode"
    else:
        detail = "already running" + (" (agent updated)" if host_result.get("changed") else "")
    if mode == "shadow":
        detail += ", in shadow mode"
    if isinstance(smoke, dict) and "victim" in smoke:
        detail += f", canary smoke victim {smoke['victim']}"
    if host_result.get("input_problems"):
        detail += "; WARNING: " + "; ".join(host_result["input_problems"])
    return ("would apply" if check_mode else "done"), detail


def entries(hosts, hostvars, plan, check_mode=False, stopped_by=None):
    """Every host's entry, from the hostvars of the play: one pass over the hosts, each host's vars read once."""
    groups = {host: item.get("group") for host, item in ((plan or {}).get("hosts") or {}).items()}
    found = []
    for host in hosts:
        host_vars = hostvars[host]
        found.append(host_entry(host, groups.get(host), {name: host_vars.get(name) for name in NOTED},
                                check_mode, stopped_by))
    return found


def unread(found):
    """The hosts of these entries whose kernel the rollout did not read (failed, unreachable, not reached)."""
    return [entry["host"] for entry in found if kernel_view(entry.get("kernel"), entry["outcome"] == "would apply") is None]


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


def report(found, interrupted=False):
    """The report of a rollout: its rows, the table's lines, a one-line summary, the hosts that failed and why."""
    rows = [host_row(entry) for entry in found]
    counts = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items(), key=_by_outcome))
    if interrupted:
        summary = f"INTERRUPTED: {summary}; every host runs its old or its new policy, bpfoom.fleet.verify reads it"
    table = aligned_table([[row["host"], row["group"], row["runs_now"], (row["policy_hash"] or "-")[:12],
                            row["outcome"], row["step"] or "-", row["detail"] or "-"] for row in rows], HEADER)
    failed = [row for row in rows if row["outcome"] in FAILED]
    return {"rows": rows, "table": table, "summary": summary, "failed": [row["host"] for row in failed],
            "failures": {row["host"]: f'{row["outcome"]} at "{row["step"]}": {row["detail"]}' for row in failed}}


def _by_outcome(item):
    return OUTCOMES.index(item[0]) if item[0] in OUTCOMES else len(OUTCOMES)


def rollback_report(results, stopped_by=None):
    """What bpfoom.fleet.rollback did, from each host's registered result (results: host -> result, None when
    the rollback never reached the host): {lines: one per host, failures: host -> why, for the hosts not taken
    back}. stopped_by: the hosts whose failed batch stopped the rollback."""
    lines, failures = [], {}
    for host, result in results.items():
        if not isinstance(result, dict):
            failures[host] = "not reached: the rollback stopped" + (f" after {stopped_by} failed" if stopped_by else "")
        elif result.get("failed") or result.get("unreachable"):
            failures[host] = "not taken back: " + " ".join(str(result.get("msg", "")).split())
        else:
            before = (result.get("previous") or {}).get("policy_name") or "no policy"
            lines.append(f"{host}: {before} -> {result.get('policy_name') or 'no policy'} "
                         f"({(result.get('policy_hash') or '-')[:12]})" + ("" if result.get("changed") else ", unchanged"))
            continue
        lines.append(f"{host}: {failures[host]}")
    return {"lines": lines, "failures": failures}

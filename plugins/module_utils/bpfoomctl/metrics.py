# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's metrics, in Prometheus' text format, for node_exporter's textfile collector."""

from __future__ import annotations

from . import inputs
from .store import replace_file

METRICS_EVERY_S = 10


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(view, hook, events_logged, now, reports=(), desired=False):
    """The agent's metrics in Prometheus' text format. view: pins.managed_status(); reports: the running policy's host
    input reports; desired: the agent keeps a policy this host should run (apply sets it, detach forgets it).

    No "up" metric: a file the agent no longer writes would go on saying 1. Whether it runs is the age of
    bpfoom_metrics_updated_timestamp_seconds (prometheus/bpfoom.rules.yml, BpfoomAgentSilent)."""
    policy = view["attached_policy"]
    attached = next((p for p in view["policies"] if p["attached"]), {})
    lines = [
        "# HELP bpfoom_metrics_updated_timestamp_seconds When the agent last wrote these metrics (Unix time): it "
        "writes them every 10 s while it runs.",
        "# TYPE bpfoom_metrics_updated_timestamp_seconds gauge",
        f"bpfoom_metrics_updated_timestamp_seconds {now:.0f}",
        "# HELP bpfoom_hook_present 1 when the kernel carries the BPF OOM hook.",
        "# TYPE bpfoom_hook_present gauge", f"bpfoom_hook_present {int(hook)}",
        "# HELP bpfoom_policy_desired 1 when this host should run a bpfoom policy (a rollout applied one; a detach "
        "forgets it).",
        "# TYPE bpfoom_policy_desired gauge", f"bpfoom_policy_desired {int(bool(desired))}",
        "# HELP bpfoom_policy_attached 1 when a bpfoom policy is attached to the hook.",
        "# TYPE bpfoom_policy_attached gauge", f"bpfoom_policy_attached {int(policy is not None)}",
        "# HELP bpfoom_events_logged_total Selections and shadow verdicts the agent wrote to the journal since it "
        "started.",
        "# TYPE bpfoom_events_logged_total counter", f"bpfoom_events_logged_total {events_logged}",
    ]
    if policy:
        lines += [
            "# HELP bpfoom_policy_info The attached policy: its name, hash and mode (enforce or shadow).",
            "# TYPE bpfoom_policy_info gauge",
            f'bpfoom_policy_info{{policy_name="{_label(policy["policy_name"])}",'
            f'policy_hash="{_label(policy["policy_hash"])}",mode="{policy["mode"]}"}} 1',
            "# HELP bpfoom_policy_evaluations_total Candidates the attached policy ranked since it was attached.",
            "# TYPE bpfoom_policy_evaluations_total counter",
            f"bpfoom_policy_evaluations_total {attached.get('evaluations') or 0}",
            "# HELP bpfoom_policy_selections_total Times the attached policy selected a candidate since it was "
            "attached (shadow: would have selected).",
            "# TYPE bpfoom_policy_selections_total counter",
            f"bpfoom_policy_selections_total {attached.get('selections') or 0}",
            "# HELP bpfoom_ooms_total Runs of the OOM killer the attached policy saw since it was attached: "
            "invocations, not kills (one kill can come with several while its victim exits; node_exporter's "
            "node_vmstat_oom_kill counts kills).",
            "# TYPE bpfoom_ooms_total counter",
            f"bpfoom_ooms_total {attached.get('ooms') or 0}",
        ]
        if policy["mode"] == "shadow":
            lines += ["# HELP bpfoom_shadow_outcomes_total OOMs a shadow policy saw, by what it would have done: "
                      "agree, disagree, no_victim (it would have found none), not_comparable (the kernel decided "
                      "without a scan).", "# TYPE bpfoom_shadow_outcomes_total counter"]
            lines += [f'bpfoom_shadow_outcomes_total{{outcome="{outcome}"}} {attached.get("shadow_" + outcome) or 0}'
                      for outcome in ("agree", "disagree", "no_victim", "not_comparable")]
    if policy and reports:
        lines += ["# HELP bpfoom_host_input_ok 1 when what the policy names resolves on this host: its target runs "
                  "(select_pid), every unit or slice it names exists; 0: it selects nobody, or matches nothing by "
                  "a name.", "# TYPE bpfoom_host_input_ok gauge"]
        lines += [f'bpfoom_host_input_ok{{map="{_label(r["map"])}",input="{_label(inputs.name_of(r))}"}} '
                  f'{0 if r["problem"] else 1}' for r in reports]
    return "\n".join(lines) + "\n"


def write_metrics(path, text):
    """The metrics file, replaced whole (the collector never reads half of it), readable by node_exporter
    (not root); rewritten every 10 s, so not worth an fsync. False when it cannot be written."""
    try:
        replace_file(path, text, mode=0o644, durable=False)
    except OSError:
        return False
    return True

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters bpfoom.fleet.rollout_entries (each host's entry, from what the rollout registered on it),
bpfoom.fleet.rollout_report (the report) and bpfoom.fleet.rollback_report (what the rollback did on each host),
from plugins/plugin_utils/rollout_report.py."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_report import entries, report, rollback_report, unread


def rollout_entries(hosts, hostvars, plan, check_mode=False, stopped_by=None):
    found = entries(list(hosts), hostvars, plan, check_mode, stopped_by)
    return {"entries": found, "unread": unread(found)}


def rollout_report(found, hostvars=None):
    """found: rollout_entries' entries; hostvars: where the kernels read after the batches are (_bpfoom_read)."""
    found = [dict(entry) for entry in found]
    for entry in found:
        if hostvars is not None and entry.get("kernel") is None and entry["host"] in hostvars:
            entry["kernel"] = hostvars[entry["host"]].get("_bpfoom_read")
    return report(found)


def rollback_report_filter(hosts, hostvars, stopped_by=None):
    """hosts: those the rollback took; what each registered (_bpfoom_rolled_back) is in hostvars."""
    return rollback_report({host: hostvars[host].get("_bpfoom_rolled_back") for host in hosts}, stopped_by)


class FilterModule:
    def filters(self):
        return {"rollout_entries": rollout_entries, "rollout_report": rollout_report,
                "rollback_report": rollback_report_filter}

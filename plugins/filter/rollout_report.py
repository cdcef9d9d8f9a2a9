# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters bpfoom.fleet.rollout_entries (each host's entry, from what the rollout registered on it) and
bpfoom.fleet.rollout_report (the report), from plugins/plugin_utils/rollout_report.py."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_report import entries, report, unread


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


class FilterModule:
    def filters(self):
        return {"rollout_entries": rollout_entries, "rollout_report": rollout_report}

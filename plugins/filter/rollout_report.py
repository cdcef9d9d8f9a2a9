# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.rollout_report: the rollout's report from each host's entry."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_report import report


def rollout_report(entries):
    return report(list(entries))


class FilterModule:
    def filters(self):
        return {"rollout_report": rollout_report}

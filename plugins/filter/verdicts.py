# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters bpfoom.fleet.verify_host (verify's verdict, row and failure of one host) and bpfoom.fleet.rollout_detail
(the rollout's outcome of one host), from plugins/plugin_utils/fleet_verdicts.py."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_verdicts import rollout_detail, verify_host


def rollout_outcome(host_result, check_mode=False, smoke=None):
    outcome, detail = rollout_detail(host_result, check_mode, smoke)
    return {"outcome": outcome, "detail": detail}


class FilterModule:
    def filters(self):
        return {"verify_host": verify_host, "rollout_outcome": rollout_outcome}

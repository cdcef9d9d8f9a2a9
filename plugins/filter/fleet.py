# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters bpfoom.fleet.fleet_plan (which policy every host runs, each distinct policy once) and
bpfoom.fleet.fleet_stage (the hosts of one stage of a staged rollout)."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_plan import fleet_plan, fleet_stage


class FilterModule:
    def filters(self):
        return {"fleet_plan": fleet_plan, "fleet_stage": fleet_stage}

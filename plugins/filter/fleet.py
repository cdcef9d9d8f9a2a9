# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters bpfoom.fleet.fleet_plan (which policy every host runs, each distinct policy once),
bpfoom.fleet.fleet_stage (the hosts of one stage of a staged rollout), bpfoom.fleet.rollout_stage (a
rollout's stage: its hosts, its canaries and each host's apply arguments) and bpfoom.fleet.rollback_stage (each
host's arguments of a rollback)."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_plan import (
    fleet_plan, fleet_stage, rollback_stage, rollout_stage)


class FilterModule:
    def filters(self):
        return {"fleet_plan": fleet_plan, "fleet_stage": fleet_stage, "rollout_stage": rollout_stage,
                "rollback_stage": rollback_stage}

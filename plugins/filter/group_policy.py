# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.group_policy: which policy a host should run, and because of which group."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_plan import group_policy


class FilterModule:
    def filters(self):
        return {"group_policy": group_policy}

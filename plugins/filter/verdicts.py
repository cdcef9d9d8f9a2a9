# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.verify_fleet (verify's verdicts, rows and failures of every host), from
plugins/plugin_utils/fleet_verdicts.py."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.fleet_verdicts import verify_fleet


class FilterModule:
    def filters(self):
        return {"verify_fleet": verify_fleet}

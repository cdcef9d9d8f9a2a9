# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.aligned_table: rows of cells as lines of aligned columns."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.table import aligned_table


class FilterModule:
    def filters(self):
        return {"aligned_table": aligned_table}

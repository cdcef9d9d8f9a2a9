# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rows of cells as lines of aligned columns: the tables of the rollout's report and of verify."""

from __future__ import annotations


def aligned_table(rows, header):
    """Each column as wide as its widest cell, whatever the lengths of host and group names."""
    lines = [[str(cell) for cell in header]] + [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]

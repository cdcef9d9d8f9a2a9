# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The argument spec of bpfoom.fleet.policy_build, shared by its module stub and its action plugin."""

from __future__ import annotations

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    template=dict(type="str", choices=["select_pid", "prefer_avoid", "cgroup_priority"]),
    template_file=dict(type="path"),
    params=dict(type="dict", default={}),
    tie_breaker=dict(type="str", choices=["kernel", "youngest", "oldest"], default="kernel"),
    strict=dict(type="bool", default=False),
    cache_dir=dict(type="path"),
    clang=dict(type="str", default="clang"),
)
MUTUALLY_EXCLUSIVE = [["template", "template_file"]]
REQUIRED_ONE_OF = [["template", "template_file"]]

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The argument spec of bpfoom.fleet.policy_build, shared by its module stub and its action plugin.

Only types here: what each template accepts is the policy catalog's
(plugins/plugin_utils/policy_catalog.py), which names the parameter it refuses.
"""

from __future__ import annotations

# The catalog's templates (plugins/plugin_utils/policy_catalog.py CATALOG; a unit test holds the two together) and
# the tie breakers every template accepts.
TEMPLATES = ("select_pid", "prefer_avoid", "cgroup_priority")
TIE_BREAKERS = ("kernel", "youngest", "oldest")

POLICY_SPEC = dict(
    name=dict(type="str", required=True),
    template=dict(type="str", choices=list(TEMPLATES)),
    template_file=dict(type="path"),
    params=dict(type="dict", default={}),
    tie_breaker=dict(type="str", choices=list(TIE_BREAKERS), default="kernel"),
    strict=dict(type="bool", default=False),
    protect_by_forgeable_comm=dict(type="bool", default=False),
    smoke=dict(type="dict"),
    mode=dict(type="str", choices=["enforce", "shadow"], default="enforce"),
)

ARGUMENT_SPEC = dict(
    policy=dict(type="dict", required=True, options=POLICY_SPEC,
                mutually_exclusive=[["template", "template_file"]],
                required_one_of=[["template", "template_file"]]),
    cache_dir=dict(type="path"),
    clang=dict(type="str", default="clang"),
)

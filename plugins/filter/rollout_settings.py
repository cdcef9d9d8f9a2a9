# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.rollout_settings: the rollout's settings checked before any host is touched, and what an
operator should know of them said as warnings (a warning costs no task of its own)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import rollout_settings


def checked_rollout_settings(settings):
    settings = dict(settings or {})
    try:
        checked = rollout_settings.check(settings)
    except rollout_settings.SettingError as error:
        raise AnsibleFilterError(str(error)) from None
    for warning in rollout_settings.warnings(settings):
        Display().warning(warning)
    return checked


class FilterModule:
    def filters(self):
        return {"rollout_settings": checked_rollout_settings}

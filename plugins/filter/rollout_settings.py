# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter bpfoom.fleet.rollout_settings: the rollout's settings checked before any host is touched."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import rollout_settings


def checked_rollout_settings(settings):
    try:
        return rollout_settings.check(dict(settings or {}))
    except rollout_settings.SettingError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    def filters(self):
        return {"rollout_settings": checked_rollout_settings}

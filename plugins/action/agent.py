# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of bpfoom.fleet.agent: the agent's files in the module's arguments (one remote execution)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.agent_payload import run_with_agent


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result.update(run_with_agent(self, task_vars or {}, "bpfoom.fleet.agent", dict(self._task.args)))
        return result

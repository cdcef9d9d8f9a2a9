# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: write every task result, per task and host, to $BPFOOM_RESULTS_FILE (JSON).

Under "_host_spans", per play and host, the first task start and last task end
(time.time()), for benchmarks that report wall time per host.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: results_file
type: aggregate
short_description: Write task results to a JSON file (tests only)
description:
  - Writes a mapping of task name to host to result into the file named by E(BPFOOM_RESULTS_FILE),
    and under C(_host_spans), per play and host, the first task start and last task end.
requirements:
  - E(BPFOOM_RESULTS_FILE) set to a writable path
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "results_file"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.results = {}
        self.spans = {}
        self.play = None

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()

    def _record(self, result):
        task, host = result._task.get_name(), result._host.get_name()
        self.results.setdefault(task, {})[host] = self._convert(result._result)
        self.spans.setdefault(self.play, {}).setdefault(host, [time.time(), None])[1] = time.time()

    def v2_runner_on_start(self, host, task):
        self.spans.setdefault(self.play, {}).setdefault(host.get_name(), [time.time(), None])

    @staticmethod
    def _convert(value):
        return json.loads(json.dumps(value, default=str))

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result)

    def v2_runner_on_skipped(self, result):
        self._record(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("BPFOOM_RESULTS_FILE")
        if path:
            with open(path, "w") as handle:
                json.dump(dict(self.results, _host_spans=self.spans), handle, indent=1)

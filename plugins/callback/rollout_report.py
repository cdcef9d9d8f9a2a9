# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback bpfoom.fleet.rollout_report: the rollout's report when its last play never ran."""

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_report
type: aggregate
short_description: The rollout's report when the controller is interrupted
version_added: 0.1.0
description:
  - C(bpfoom.fleet.rollout) ends with a report of every host (its last play). A controller interrupted during a
    batch (Ctrl-C) never reaches that play; this callback then prints the same report from what the run saw,
    marking the hosts that were being changed as C(interrupted) (they run their old or their new policy, as the
    agent applies make-before-break) and the hosts not started as C(not reached), and writes it to
    C(bpfoom_report_file) when that extra variable is set.
  - It does the same if the playbook stops for any other reason before its report play.
  - It prints nothing for other playbooks or when the report play ran.
  - A job killed outright (SIGKILL, as an AWX cancel does after its grace period) can print nothing; run
    C(bpfoom.fleet.verify) then.
requirements:
  - enable it in ansible.cfg (C(callbacks_enabled = bpfoom.fleet.rollout_report)) or C(ANSIBLE_CALLBACKS_ENABLED)
"""

import atexit
import json
import os

from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.rollout_report import NOTED, host_entry, report

# The rollout marks its batch play with this play variable (the report is only about rollouts).
ROLLOUT_PLAY_VAR = "_bpfoom_batches"
POLICY_MODULES = ("bpfoom.fleet.policy", "policy")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bpfoom.fleet.rollout_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._pid = os.getpid()
        self._hosts = []             # the rollout's hosts, in play order
        self._groups = {}            # host -> group, from the plan
        self._noted = {}             # host -> what the rollout registered on it (NOTED name -> value)
        self._stopped_by = None      # the hosts whose batch stopped the rollout
        self._kernels = {}           # host -> the last policy result (the kernel, read back)
        self._in_flight = {}         # host -> the task it runs now
        self._report_file = None
        self._rollout_started = False
        self._reported = False
        self._done = False
        atexit.register(self._at_exit)

    def v2_playbook_on_play_start(self, play):
        if ROLLOUT_PLAY_VAR not in play.vars or self._rollout_started:
            return
        self._rollout_started = True
        manager = play.get_variable_manager()
        self._hosts = [host.name for host in manager._inventory.get_hosts(play.hosts)]
        self._report_file = manager.extra_vars.get("bpfoom_report_file")

    def v2_runner_on_start(self, host, task):
        self._in_flight[host.name] = task.get_name()

    def _note(self, result):
        host = result._host.name
        self._in_flight.pop(host, None)
        if result._task.register in NOTED:
            self._noted.setdefault(host, {})[result._task.register] = result._result
        if result._task.action in POLICY_MODULES:
            self._kernels[host] = result._result

    def v2_runner_on_ok(self, result):
        self._note(result)
        facts = result._result.get("ansible_facts") or {}
        if "_bpfoom_plan" in facts:
            self._groups = {host: plan["group"] for host, plan in facts["_bpfoom_plan"]["hosts"].items()}
        if "_bpfoom_failure" in facts:
            self._noted.setdefault(result._host.name, {})["_bpfoom_failure"] = facts["_bpfoom_failure"]
        if "_bpfoom_stopped_by" in facts:
            self._stopped_by = facts["_bpfoom_stopped_by"]
        if "_bpfoom_report" in facts:
            self._reported = True

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._note(result)

    def v2_runner_on_unreachable(self, result):
        self._note(result)

    def v2_runner_on_skipped(self, result):
        self._in_flight.pop(result._host.name, None)

    def v2_playbook_on_stats(self, stats):
        self._done = True
        self._report(interrupted=False)

    def _at_exit(self):
        # Forked workers inherit the handler; only the controller's own process reports.
        if os.getpid() == self._pid and not self._done:
            self._report(interrupted=True)

    def _report(self, interrupted):
        if not self._rollout_started or self._reported:
            return
        self._reported = True
        entries = [self._entry(host, interrupted) for host in self._hosts]
        result = report(entries, interrupted=interrupted)
        heading = "ROLLOUT INTERRUPTED" if interrupted else "ROLLOUT STOPPED BEFORE ITS REPORT"
        self._display.display(f"\n{heading} (bpfoom.fleet.rollout_report)", stderr=False)
        for line in result["table"] + [result["summary"]]:
            self._display.display(line)
        if self._report_file:
            with open(self._report_file, "w", encoding="utf-8") as stream:
                json.dump(result["rows"], stream, indent=4)
                stream.write("\n")

    def _entry(self, host, interrupted):
        if host in self._in_flight:
            why = "the controller was interrupted" if interrupted else "the playbook stopped"
            return {"host": host, "group": self._groups.get(host), "kernel": self._kernels.get(host),
                    "outcome": "interrupted", "step": self._in_flight[host],
                    "detail": f"{why} during this step: the host runs its old or its new policy"}
        entry = host_entry(host, self._groups.get(host), self._noted.get(host, {}),
                           bool(context.CLIARGS.get("check")), self._stopped_by)
        return entry if entry["kernel"] is not None else dict(entry, kernel=self._kernels.get(host))

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark helper: a connection that answers each module execution with an answer recorded once.

With pipelining, a module execution is one exec_command whose input is the module's AnsiballZ payload,
which names the module (module_fqn='...'). BPFOOM_REPLAY_MODE=record runs it on this machine (as the local
connection does) and keeps the module's stdout in BPFOOM_REPLAY_FILE (JSON, module name -> stdout);
BPFOOM_REPLAY_MODE=replay answers with the kept stdout at once, running nothing: what remains is the
controller's own cost. A module without a recorded answer runs for real.
"""

from __future__ import annotations

import json
import os
import re

from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = r"""
name: replay
short_description: Answer module executions with recorded results (benchmarks only)
description:
  - Records each module's answer on this machine (E(BPFOOM_REPLAY_MODE=record)), or answers with it without
    running anything (E(BPFOOM_REPLAY_MODE=replay)); the recordings are in E(BPFOOM_REPLAY_FILE).
author: bpfoom.fleet contributors
"""

MODULE = re.compile(rb"module_fqn='([^']+)'")


class Connection(LocalConnection):
    transport = "replay"

    def exec_command(self, cmd, in_data=None, sudoable=True):
        found = MODULE.search(in_data or b"")
        if not found:
            return super().exec_command(cmd, in_data, sudoable)
        module, path = found.group(1).decode(), os.environ["BPFOOM_REPLAY_FILE"]
        recorded = json.loads(open(path, encoding="utf-8").read()) if os.path.exists(path) else {}
        if os.environ.get("BPFOOM_REPLAY_MODE") == "replay" and module in recorded:
            return 0, recorded[module].encode(), b""
        rc, stdout, stderr = super().exec_command(cmd, in_data, sudoable)
        if os.environ.get("BPFOOM_REPLAY_MODE") == "record" and rc == 0:
            recorded[module] = stdout.decode()
            with open(f"{path}.{os.getpid()}", "w", encoding="utf-8") as kept:
                json.dump(recorded, kept)
            os.replace(f"{path}.{os.getpid()}", path)     # forks record at once: none reads a half-written file
        return rc, stdout, stderr

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent options shared by bpfoom.fleet.policy and bpfoom.fleet.agent (module_utils/agent_host.py AGENT_SPEC)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  agent:
    description:
      - Options of the agent's unit, as the role's variables C(agent_oom_score_adj), C(agent_restart_sec) and
        C(agent_metrics_file).
    type: dict
    suboptions:
      oom_score_adj:
        description: oom_score_adj of the agent's processes (-1000 to 1000).
        type: int
        default: -900
      restart_sec:
        description: Seconds systemd waits before restarting a crashed agent (0 to 3600).
        type: int
        default: 2
      metrics_file:
        description:
          - The file the agent writes its metrics to, for node_exporter's textfile collector (Prometheus text
            format, replaced atomically every 10 s). Its directory must exist when the agent starts; an empty
            value writes no metrics.
        type: str
        default: /var/lib/prometheus/node-exporter/bpfoom.prom
  agent_files:
    description:
      - Internal, set by the action plugin; the agent's files, base64-encoded.
    type: dict
"""

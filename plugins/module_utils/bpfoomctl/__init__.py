# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bpfoomctl, the host agent: attach, verify and inspect this host's BPF OOM policy.

Python's standard library and libbpf1 (through ctypes) only: no compiler, no
headers, no bcc on the host. Installed as the package
/usr/local/lib/bpfoom/bpfoomctl/ and run by the /usr/local/sbin/bpfoomctl shim
(`bpfoomctl --help`); the modules send these files to the host inside their
one execution (plugins/module_utils/agent_host.py installs them).

Its rooms, each importing only those above it:
  contract   what the agent and the modules agree on: paths, kernel functions, modes, exit codes
  abi        the structures shared with the policy's BPF C and the kernel's UAPI, as ctypes types
  libbpf     the libbpf1 bindings and its log
  kernel     what the kernel holds: BTF, links, programs, their maps
  store      the agent's state on disk (an object with a root directory)
  pins       the policies pinned in bpffs, as the kernel holds them
  inputs     what a policy resolves on this host (unit names, select_pid's target)
  attach     apply, detach, rollback, boot, stop
  status     what the kernel holds, in one report
  explain    which process the policy would kill now
  journal    the journal entries
  metrics    the metrics file
  daemon     the events loop (the unit's main process)
  cli        the command line
"""

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bpfoomctl's command line. Every command prints JSON on stdout (what the modules read); a failure prints
{"failed": true, "rc": N, "msg": ...} and exits with N, one of contract.ExitCode."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .contract import ExitCode, Failure
from .store import Store

DESCRIPTION = """attach, verify and inspect this host's BPF OOM policy.
Python's standard library and libbpf1 (through ctypes) only: no compiler, headers or bcc on the host."""
EPILOG = "exit codes: " + "; ".join(f"{code.value} {code.name.lower()}" for code in ExitCode)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _apply_arguments(command):
    command.add_argument("--mode", choices=("enforce", "shadow"), default="enforce",
                         help="enforce: it picks the victim (kernels with the hook); shadow: it only records what it "
                              "would have picked (any kernel with BTF)")
    command.add_argument("policy_dir", metavar="POLICY_DIR", help="a policy built by bpfoom.fleet.policy_build")


def _explain_arguments(command):
    # Imported only where explain's parser is built: other commands do not pay for it.
    from . import explain  # pylint: disable=import-outside-toplevel
    command.add_argument("--cgroup", metavar="PATH", help="an OOM of this cgroup (such as "
                                                          "/system.slice/nginx.service), not a global one")
    command.add_argument("--top", metavar="N", type=positive_int, default=explain.EXPLAIN_TOP,
                         help=f"candidates to list (default {explain.EXPLAIN_TOP})")
    command.add_argument("policy_dir", metavar="POLICY_DIR", nargs="?",
                         help="a built policy to preview, its units and PIDs resolved now (default: the desired "
                              "one, as its pinned maps hold them)")


def _events_arguments(command):
    command.add_argument("--once", action="store_true", help="read what is pending and return")
    command.add_argument("--metrics-file", metavar="PATH", help="where node_exporter's textfile collector reads")


# Each command: its help, its arguments, and what runs it (module, function, and the options it is given, in
# the order of the function's parameters after the store).
COMMANDS = {
    "apply": ("attach POLICY_DIR/policy.bpf.o (checked against its manifest.json), then detach the previous policy "
              "(make-before-break)", _apply_arguments, ("attach", "apply", ("policy_dir", "mode"))),
    "boot": ("re-apply the desired policy (the systemd unit's start and reload)", None, ("attach", "boot", ())),
    "detach": ("detach every bpfoom policy and forget it: the kernel's own choice again", None,
               ("attach", "detach", ())),
    "stop": ("the systemd unit's stop: detach on a requested stop; keep the policy after a crash of the agent or "
             "during a restart", None, ("attach", "stop", ())),
    "rollback": ("re-apply the last policy that verified before the current one", None, ("attach", "rollback", ())),
    "status": ("what the kernel holds: hook, links, programs, policy names, counters, host inputs", None,
               ("status", "status", ())),
    "explain": ("which process the policy would kill in an OOM now, and which one the kernel would kill without it; "
                "changes nothing", _explain_arguments, ("explain", "explain", ("policy_dir", "cgroup", "top"))),
    "events": ("one journal entry per task the policy selected (per OOM in shadow mode); the metrics every 10 s "
               "(the unit's main process)", _events_arguments, ("daemon", "events", ("once", "metrics_file"))),
}


# bpfoomctl speaks English, its own texts and argparse's few words alike: gettext would look up a catalog of
# argparse's words on disk for each of them (and import locale), a tenth of a command's start-up under TCG.
argparse._ = str  # pylint: disable=protected-access


def _formatter(prog):
    """argparse's help layout, for the terminal's width as shutil.get_terminal_size() reads it (COLUMNS, then
    stdout's terminal, else 80) without importing shutil: argparse imports it (with bz2, lzma and zlib) for the
    first argument it adds, a seventh of a command's start-up on the lab's hosts."""
    try:
        columns = int(os.environ.get("COLUMNS", 0)) or os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 80
    return argparse.HelpFormatter(prog, width=columns - 2)


def parser(only=None):
    """The command line; with only, just that command's (a run builds one subparser, not eight: argparse's
    setup was a fifth of a command's time on the lab's hosts). --help and a wrong command get them all."""
    top = argparse.ArgumentParser(prog="bpfoomctl", description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
                                  formatter_class=_formatter)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (text, arguments, _runner) in COMMANDS.items():
        if only in (None, name):
            command = commands.add_parser(name, help=text, description=text, allow_abbrev=False,
                                          formatter_class=_formatter)
            if arguments:
                arguments(command)
    return top


def say(text, stream=None):
    """One line on stdout (the JSON the modules read) or stderr."""
    (stream or sys.stdout).write(text + "\n")


def run(args, store):
    """The command's own module only: a command imports what it uses, not the whole agent."""
    module, function, names = COMMANDS[args.command][2]
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)(
        store, *(getattr(args, name) for name in names))


def main(argv, store=None):
    only = argv[1] if len(argv) > 1 and argv[1] in COMMANDS else None
    args = parser(only).parse_args(argv[1:])    # --help: stdout, rc 0; a bad command line: usage, rc 2
    if os.geteuid() != 0:
        say(json.dumps({"failed": True, "rc": int(ExitCode.FAILED),
                        "msg": "bpfoomctl needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)"}))
        return ExitCode.FAILED
    store = store or Store()
    try:
        result = run(args, store)
    except OSError as error:
        if not store.writes(error.filename):
            raise
        failure = Failure(ExitCode.STATE_NOT_WRITABLE, (
            f"cannot write {error.filename}: {error.strerror}; nothing was changed (the running policy and what boot "
            f"re-applies are as before): free space in {store.root} and apply again"))
    except Failure as caught:
        failure = caught
    else:
        say(json.dumps(result, indent=1, sort_keys=True))
        return ExitCode.OK
    say(json.dumps({"failed": True, "rc": int(failure.code), "msg": str(failure)}))
    say(f"bpfoomctl: {failure}", sys.stderr)
    return failure.code

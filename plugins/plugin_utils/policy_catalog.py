# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The policy catalog: what each template takes, how it is validated, what C it gets.

Controller side. Every user value is checked here, before rendering, and
reaches the C text only as a literal this module writes (strings as \\x
escapes, integers in range, hashes of names), never as text of its own.
"""

from __future__ import annotations

import hashlib
import os
import re

from ..module_utils.policy_build_args import TIE_BREAKERS

BPF_TEMPLATE_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "templates", "bpf"))
HASH_PLACEHOLDER = "@@BPFOOM_POLICY_HASH@@"

MAX_LIST = 16
MAX_PRIORITIES = 32
COMM_LEN = 15                   # TASK_COMM_LEN - 1
UID_MAX = 4294967294            # (uid_t)-1 is "no uid"
PRIORITY_MAX = 1000
# Conservative character sets: nothing that quotes, escapes, formats or
# comments in C, in a shell or in the kernel's "policy_name=NAME, ..." line.
NAME_RE = re.compile(r"^[A-Za-z0-9_.:+@/-]{1,15}$")
COMM_RE = re.compile(r"^[A-Za-z0-9_.:+@/ -]{1,15}$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,255}\.(service|scope|slice)$")
SERVICE_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,247}\.service$")
PIDFILE_RE = re.compile(r"^(/[A-Za-z0-9._@+-]+)+$")
PARAM_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class PolicyError(ValueError):
    """A parameter the catalog refuses; the message names it and says what is allowed."""


# --- who may protect a task -------------------------------------------------
# Each matcher reads one identity of a task, either chosen by the process itself or vouched for by
# the kernel or root. Preferring a task (it dies sooner) may use any: a process that claims a name
# only hurts itself. Whatever lowers a task's chance to die (avoid, strict, a high priority) counts
# only on a vouched identity. docs/docsite/rst/policies.rst states this table (tests/unit hold the two together);
# the BPF side of it is templates/bpf/include/bpfoom_match.h.
CHOSEN_BY_PROCESS, VOUCHED = "chosen by the process", "vouched for by the kernel or root"
MATCHERS = {
    "comm": (CHOSEN_BY_PROCESS, "the command name: any process sets its own (prctl(PR_SET_NAME), or the name "
                                "of what it executes)"),
    "comm_prefix": (CHOSEN_BY_PROCESS, "the same command name, by its first characters"),
    "cgroup": (VOUCHED, "a systemd unit or slice the task runs under, resolved on each host (an alias to its "
                        "unit); it protects only where the cgroup and every ancestor are owned by root, never "
                        "in a user's own subtree (systemd --user, a delegated unit), where anyone may pick any "
                        "name"),
    "uid": (VOUCHED, "the task's user id: only a privileged process can take another"),
}
FORGEABLE_FLAG = "protect_by_forgeable_comm"


# --- C literals: the only way a value reaches the C text -------------------

def c_string(value: str, size: int) -> str:
    """A C string literal of at most size - 1 bytes, every byte a \\x escape."""
    data = value.encode("ascii")
    if len(data) > size - 1:
        raise PolicyError(f"{value!r} is longer than {size - 1} bytes")
    return '"' + "".join(f"\\x{byte:02x}" for byte in data) + '"'


def c_array(items: list, empty: str = "0") -> str:
    """An initializer; C has no empty arrays, so an empty list becomes one unused element."""
    return "{ " + ", ".join(items or [empty]) + " }"


def comm_pattern(pattern: str, exact: bool) -> str:
    """A struct bpfoom_comm_pattern initializer: the bytes as two little-endian words and their mask.

    An exact name also masks its terminating NUL (so "sshd" does not match "sshd-session").
    """
    data = pattern.encode("ascii").ljust(16, b"\0")
    length = len(pattern) + (1 if exact else 0)
    mask = (b"\xff" * length).ljust(16, b"\0")
    words = [int.from_bytes(data[i:i + 8], "little") for i in (0, 8)]
    masks = [int.from_bytes(mask[i:i + 8], "little") for i in (0, 8)]
    return (f"{{ {{ 0x{words[0]:016x}ULL, 0x{words[1]:016x}ULL }}, "
            f"{{ 0x{masks[0]:016x}ULL, 0x{masks[1]:016x}ULL }} }}")


# --- validation -----------------------------------------------------------

def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise PolicyError(f"{where}: {message}")


def _string(value, where: str, pattern: re.Pattern, what: str) -> str:
    _require(isinstance(value, str), where, f"must be a string ({what}), got {type(value).__name__}")
    _require(value.isascii() and "\x00" not in value, where, f"must be ASCII without NUL ({what})")
    _require(bool(pattern.fullmatch(value)), where, f"{value!r} is not {what}")
    return value


def _integer(value, where: str, low: int, high: int) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool), where,
             f"must be an integer from {low} to {high}, got {type(value).__name__}")
    _require(low <= value <= high, where, f"{value} is out of range ({low} to {high})")
    return value


def _list(value, where: str, limit: int) -> list:
    _require(isinstance(value, list), where, f"must be a list, got {type(value).__name__}")
    _require(0 < len(value) <= limit, where, f"must hold 1 to {limit} entries (leave it out for none)")
    return value


def _mapping(value, where: str, allowed: tuple) -> dict:
    _require(isinstance(value, dict), where, f"must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    _require(not unknown, where, f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")
    return value


def policy_name(value) -> str:
    return _string(value, "name", NAME_RE, "1 to 15 characters among letters, digits and _.:+@/-")


def _matcher_set(value, where: str) -> dict:
    value = _mapping(value, where, tuple(MATCHERS))
    _require(bool(value), where, f"give at least one of {', '.join(MATCHERS)}")
    result = {"comm": [], "comm_prefix": [], "cgroup": [], "uid": []}
    for key in ("comm", "comm_prefix"):
        for index, item in enumerate(_list(value[key], f"{where}.{key}", MAX_LIST) if key in value else []):
            result[key].append(_string(item, f"{where}.{key}[{index}]", COMM_RE,
                                       "a command name of 1 to 15 characters among letters, digits, space and _.:+@/-"))
    for index, item in enumerate(_list(value["cgroup"], f"{where}.cgroup", MAX_LIST) if "cgroup" in value else []):
        result["cgroup"].append(_string(item, f"{where}.cgroup[{index}]", UNIT_RE,
                                        "a systemd unit or slice name (NAME.service, NAME.scope, NAME.slice)"))
    for index, item in enumerate(_list(value["uid"], f"{where}.uid", MAX_LIST) if "uid" in value else []):
        result["uid"].append(_integer(item, f"{where}.uid[{index}]", 0, UID_MAX))
    return result


class Template:
    """One template of the catalog, described once: its parameters, their C literals, its host inputs.

    params() checks and normalizes the user's values; literals() turns them
    into the C literals the template places (its `c` variable); host_inputs()
    says what the agent resolves on each host, when it applies the policy and
    while it runs (PIDs and unit aliases differ per host, and change), in the
    generic forms bpfoomctl knows: a BPF hash map to fill with the PID and
    start time of a unit's main process or a pidfile's ("pid_of"), or with the
    cgroup names that unit and slice names resolve to ("units", declared by
    the frame).
    """

    name = None
    allows_strict = False
    allows_forgeable_comm = False

    def path(self) -> str:
        return os.path.join(BPF_TEMPLATE_DIR, "policies", f"{self.name}.bpf.c.j2")

    def params(self, params: dict) -> dict:
        raise NotImplementedError

    def literals(self, params: dict) -> dict:
        return {}

    def host_inputs(self, params: dict) -> list:
        return []

    def check_protection(self, params: dict, forgeable_comm: bool) -> None:
        """Refuse a protection that rests on an identity a process chooses for itself (see MATCHERS)."""


class SelectPid(Template):
    """The seed document's example: one process, named by its unit or its pidfile, dies first."""

    name = "select_pid"

    def params(self, params):
        params = _mapping(params, "params", ("unit", "pidfile"))
        _require(len(params) == 1, "params", "select_pid takes exactly one of unit, pidfile")
        if "unit" in params:
            return {"unit": _string(params["unit"], "params.unit", SERVICE_RE, "a systemd service name (NAME.service)")}
        pidfile = _string(params["pidfile"], "params.pidfile", PIDFILE_RE,
                          "an absolute path of letters, digits and ._@+-")
        _require("/../" not in pidfile + "/" and "/./" not in pidfile + "/", "params.pidfile",
                 "may not contain . or .. parts")
        return {"pidfile": pidfile}

    def host_inputs(self, params):
        return [{"map": "bpfoom_target_pids", "pid_of": dict(params)}]


class PreferAvoid(Template):
    """Matching tasks die first (prefer) or last (avoid)."""

    name = "prefer_avoid"
    allows_strict = True

    allows_forgeable_comm = True

    def params(self, params):
        params = _mapping(params, "params", ("prefer", "avoid"))
        _require(bool(params), "params", "prefer_avoid needs prefer, avoid or both")
        return {key: _matcher_set(params[key], f"params.{key}") for key in ("prefer", "avoid") if key in params}

    def check_protection(self, params, forgeable_comm):
        avoid = params.get("avoid")
        if not avoid or forgeable_comm or any(avoid[key] for key in MATCHERS if MATCHERS[key][0] == VOUCHED):
            return
        names = [key for key in ("comm", "comm_prefix") if avoid[key]]
        raise PolicyError(
            f"params.avoid.{names[0]}: would protect tasks by their command name alone, which any process, "
            "a tenant's too, gives itself (prctl(PR_SET_NAME)): a memory hog named after an avoided command "
            "would be spared and others killed in its place. Qualify the name by an identity the process "
            "cannot choose: add avoid.uid (the service's user) or avoid.cgroup (its unit); the task must then "
            f"match both. To accept the risk, set {FORGEABLE_FLAG}: true in the policy")

    def literals(self, params):
        empty = {"comm": [], "comm_prefix": [], "cgroup": [], "uid": []}
        return {key: _matcher_literals(params.get(key, empty)) for key in ("prefer", "avoid")}

    def host_inputs(self, params):
        return [{"map": f"{key}_units", "units": [{"name": name, "value": 1}
                                                  for name in params.get(key, {}).get("cgroup", [])]}
                for key in ("prefer", "avoid")]


class CgroupPriority(Template):
    """The RFC selftest's idea: a priority per unit or slice, the lowest dies first."""

    name = "cgroup_priority"

    def params(self, params):
        params = _mapping(params, "params", ("priorities", "default_priority"))
        _require("priorities" in params, "params.priorities", "is required")
        entries = []
        for index, entry in enumerate(_list(params["priorities"], "params.priorities", MAX_PRIORITIES)):
            where = f"params.priorities[{index}]"
            entry = _mapping(entry, where, ("cgroup", "priority"))
            _require(set(entry) == {"cgroup", "priority"}, where, "needs cgroup and priority")
            entries.append({"cgroup": _string(entry["cgroup"], f"{where}.cgroup", UNIT_RE,
                                              "a systemd unit or slice name (NAME.service, NAME.scope, NAME.slice)"),
                            "priority": _integer(entry["priority"], f"{where}.priority", 0, PRIORITY_MAX)})
        names = [entry["cgroup"] for entry in entries]
        _require(len(set(names)) == len(names), "params.priorities", "names a cgroup twice")
        default = _integer(params.get("default_priority", PRIORITY_MAX // 2), "params.default_priority",
                           0, PRIORITY_MAX)
        return {"priorities": entries, "default_priority": default}

    def literals(self, params):
        return {"default_rank": str(PRIORITY_MAX - params["default_priority"])}

    def host_inputs(self, params):
        # rank = PRIORITY_MAX - priority: the lowest priority ranks highest, dies first
        return [{"map": "priority_units", "units": [{"name": e["cgroup"], "value": PRIORITY_MAX - e["priority"]}
                                                    for e in params["priorities"]]}]


class CustomTemplate(Template):
    """A user's own template file: flat parameters of bounded integers and short strings."""

    def __init__(self, template_file: str):
        self.template_file = template_file
        self.name = os.path.basename(template_file)

    def path(self):
        return self.template_file

    def params(self, params):
        _require(isinstance(params, dict), "params", f"must be a mapping, got {type(params).__name__}")
        result = {}
        for key, value in params.items():
            _string(key, "params", PARAM_NAME_RE, "a parameter name (lower case, digits, _)")
            if isinstance(value, str):
                result[key] = _string(value, f"params.{key}", re.compile(r"^[ -~]{0,63}$"),
                                      "at most 63 printable ASCII characters")
            else:
                result[key] = _integer(value, f"params.{key}", -(2**31), 2**31 - 1)
        return result

    def literals(self, params):
        return {"params": {key: (c_string(value, 64) if isinstance(value, str) else f"({value})")
                           for key, value in params.items()}}


CATALOG = {template.name: template for template in (SelectPid(), PreferAvoid(), CgroupPriority())}
TEMPLATES = tuple(CATALOG)
# The keys of a policy value (group_vars' bpfoom_policy); `smoke` belongs to the rollout's canary and
# `mode` to the hosts (enforce or shadow: the same object), not to the object.
POLICY_KEYS = ("name", "template", "template_file", "params", "tie_breaker", "strict", FORGEABLE_FLAG, "smoke",
               "mode")
MODES = ("enforce", "shadow")


def template_of(spec: dict) -> Template:
    return CATALOG.get(spec["template"]) or CustomTemplate(spec["template_path"])


def validate(policy: dict) -> dict:
    """Check a whole policy value; return the normalized spec the rest of the build uses."""
    _require(isinstance(policy, dict), "policy", f"must be a mapping, got {type(policy).__name__}")
    unknown = sorted(set(policy) - set(POLICY_KEYS))
    _require(not unknown, "policy", f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(POLICY_KEYS)}")
    name = policy_name(policy.get("name"))
    template_name, template_file = policy.get("template"), policy.get("template_file")
    _require((template_name is None) != (template_file is None), "template",
             "give exactly one of template (from the catalog) or template_file (your own)")
    if template_name is not None:
        _require(template_name in CATALOG, "template", f"{template_name!r} is not one of {', '.join(TEMPLATES)}")
        template = CATALOG[template_name]
    else:
        _require(isinstance(template_file, str) and os.path.isabs(template_file) and template_file.endswith(".j2"),
                 "template_file", "must be an absolute path to a .j2 file")
        _require(os.path.isfile(template_file), "template_file", f"{template_file} does not exist")
        template = CustomTemplate(template_file)
    tie_breaker = policy.get("tie_breaker", "kernel")
    _require(tie_breaker in TIE_BREAKERS, "tie_breaker", f"{tie_breaker!r} is not one of {', '.join(TIE_BREAKERS)}")
    _require(policy.get("mode", "enforce") in MODES, "mode", f"{policy.get('mode')!r} is not one of {', '.join(MODES)}")
    strict = policy.get("strict", False)
    _require(isinstance(strict, bool), "strict", "must be true or false")
    _require(not strict or template.allows_strict, "strict",
             "only prefer_avoid has a strict mode (avoided tasks are never killed)")
    forgeable_comm = policy.get(FORGEABLE_FLAG, False)
    _require(isinstance(forgeable_comm, bool), FORGEABLE_FLAG, "must be true or false")
    _require(not forgeable_comm or template.allows_forgeable_comm, FORGEABLE_FLAG,
             "only prefer_avoid protects by command name")
    params = template.params(policy.get("params") or {})
    template.check_protection(params, forgeable_comm)
    spec = {
        "name": name,
        "template": template.name,
        "template_path": template.path(),
        "tie_breaker": tie_breaker,
        "strict": strict,
        "params": params,
    }
    if forgeable_comm:                  # only when set: every other policy keeps its source, so its hash
        spec[FORGEABLE_FLAG] = True
    return spec


# --- rendering ------------------------------------------------------------

def _matcher_literals(matcher: dict) -> dict:
    comms = [comm_pattern(p, True) for p in matcher["comm"]] + [comm_pattern(p, False) for p in matcher["comm_prefix"]]
    return {
        "comm_count": len(comms),
        "comms": c_array(comms, "{}"),
        "uid_count": len(matcher["uid"]),
        "uids": c_array([f"{uid}U" for uid in matcher["uid"]]),
    }


def _unit_maps(host_inputs: list) -> list:
    """The frame's units maps: each map's name and the names it is filled from, as C literals."""
    return [{"map": host_input["map"], "named": len(host_input["units"]), "count": max(1, len(host_input["units"])),
             "names": c_array([c_string(unit["name"], 256) for unit in host_input["units"]], '""')}
            for host_input in host_inputs if "units" in host_input]


def c_literals(spec: dict) -> dict:
    """The C literals a template may place in its text (the `c` variable)."""
    template = template_of(spec)
    return dict(template.literals(spec["params"]), name=c_string(spec["name"], 16), hash=HASH_PLACEHOLDER,
                unit_maps=_unit_maps(template.host_inputs(spec["params"])))


def _jinja_environment(template_path: str):
    """Plain Jinja, sandboxed: a policy's source is a function of the policy alone (no host variables),
    so each distinct policy renders once per run, whatever the number of hosts."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment
    loader = jinja2.FileSystemLoader([os.path.dirname(template_path), BPF_TEMPLATE_DIR])
    return SandboxedEnvironment(loader=loader, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                undefined=jinja2.StrictUndefined, autoescape=False)


def render(spec: dict) -> tuple:
    """Render a spec into (C source, policy hash).

    The policy hash is the sha256 of the source with the hash left out, then
    written into the source's .rodata.
    """
    import jinja2
    policy = {key: spec[key] for key in ("name", "template", "tie_breaker", "strict", "params")}
    policy[FORGEABLE_FLAG] = spec.get(FORGEABLE_FLAG, False)
    path = spec["template_path"]
    try:
        source = _jinja_environment(path).get_template(os.path.basename(path)).render(
            policy=policy, c=c_literals(spec))
    except jinja2.TemplateError as error:
        raise PolicyError(f"template {path}: {error}") from None
    if HASH_PLACEHOLDER not in source:
        raise PolicyError(f"template {path} does not extend frame.bpf.c.j2 (its source lacks the policy hash)")
    policy_hash = hashlib.sha256(source.encode()).hexdigest()
    return source.replace(HASH_PLACEHOLDER, c_string(policy_hash, 65)), policy_hash


def manifest(spec: dict, policy_hash: str) -> dict:
    """What travels with the object to the host: its identity, how it was made, what the host resolves."""
    return {"name": spec["name"], "hash": policy_hash, "template": spec["template"],
            "tie_breaker": spec["tie_breaker"], "strict": spec["strict"],
            "host_inputs": template_of(spec).host_inputs(spec["params"])}

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout's and the rollback's own settings, checked before any host is touched.

Each refusal names the setting, what it got and what is allowed: a batch of
"0" once rolled out to every host at once (no canary batch), a wave of -5 %
made an empty wave that succeeded, a rollback from a hash no policy has
changed nothing and reported success.
"""

from __future__ import annotations

import re

POLICY_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
BATCH_RE = re.compile(r"^(\d+)(%?)$")


class SettingError(ValueError):
    """A setting the rollout refuses; the message names it and says what is allowed."""


def _percent(value, name: str, low: int) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"-?\d+", text) or not low <= int(text) <= 100:
        raise SettingError(f"{name} is {value!r}: give a whole number of percent from {low} to 100")
    return int(text)


def batches(value) -> list:
    """bpfoom_batches as serial takes it: a list, or comma-separated text (an AWX survey's); each a positive
    number of hosts or a percentage from 1 to 100 %."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise SettingError(f"bpfoom_batches is {value!r}: give a list (or comma-separated text) of batch sizes, "
                           "such as [1, '10%', '100%']")
    result = []
    for index, item in enumerate(items):
        match = BATCH_RE.fullmatch(str(item).strip()) if not isinstance(item, bool) else None
        number = int(match[1]) if match else 0
        if not match or number < 1 or (match[2] and number > 100):
            raise SettingError(f"bpfoom_batches[{index}] is {item!r}: each batch is a number of hosts from 1 up, "
                               "or a percentage from 1% to 100%")
        result.append(f"{number}%" if match[2] else number)
    return result


def rollback_hash(value) -> str:
    text = str(value).strip()
    if not POLICY_HASH_RE.fullmatch(text):
        raise SettingError(f"bpfoom_rollback_from is {value!r}: give a policy hash as bpfoom.fleet.policy_info "
                           "reports it (policy_hash: 64 lower-case hexadecimal characters)")
    return text


def check(settings: dict) -> dict:
    """The settings given (keys without the bpfoom_ prefix), normalized; a SettingError names the first wrong one."""
    checked = {}
    if settings.get("batches") is not None:
        checked["batches"] = batches(settings["batches"])
    if settings.get("wave_percent") is not None:
        checked["wave_percent"] = _percent(settings["wave_percent"], "bpfoom_wave_percent", 1)
    if settings.get("max_fail_percentage") is not None:
        checked["max_fail_percentage"] = _percent(settings["max_fail_percentage"], "bpfoom_max_fail_percentage", 0)
    if settings.get("rollback_from") is not None:
        checked["rollback_from"] = rollback_hash(settings["rollback_from"])
    unpatched = settings.get("unpatched_hosts")
    if unpatched is not None and unpatched not in ("fail", "skip", "shadow"):
        raise SettingError(f"bpfoom_unpatched_hosts is {unpatched!r}: give fail, skip or shadow")
    return checked


REPORT_CALLBACK = "bpfoom.fleet.rollout_report"


def warnings(settings: dict) -> list:
    """What the settings given allow but an operator should know: an interrupted rollout ends without its report
    when the callback that prints it then is not enabled (callbacks_enabled: the controller's CALLBACKS_ENABLED)."""
    enabled = settings.get("callbacks_enabled")
    if enabled is None or REPORT_CALLBACK in enabled:
        return []
    return [f"The callback {REPORT_CALLBACK} is not enabled: if this rollout is interrupted (Ctrl-C), it ends without "
            "its report. Add it to callbacks_enabled in ansible.cfg (or ANSIBLE_CALLBACKS_ENABLED)."]

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which mode a host runs its policy in: one rule for the policy module (what it applies) and for verify's
verdict (what it expects), so the two never disagree about a host without the hook."""

from __future__ import annotations

UNPATCHED_CHOICES = ("fail", "skip", "shadow")


def mode_on_host(mode, hook, unpatched="fail"):
    """The policy's mode where the kernel has the hook, or where the policy is a shadow one anyway (any kernel with
    BTF runs it). On a kernel without the hook an enforcing policy runs in shadow mode when unpatched is
    "shadow"; otherwise nothing runs there ("skip": left out; "fail": refused): None."""
    mode = mode or "enforce"
    if hook or mode == "shadow":
        return mode
    return "shadow" if unpatched == "shadow" else None

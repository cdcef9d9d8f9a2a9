"""The lab tier's fleet (fixture `lab` of tests/conftest.py), and which of its hosts each kind of test runs on.

Two Debian 12 hosts with the hook (hook1, hook2); two without it, on Debian 12's own kernels (nohook1 on its
6.12, nohook2 on its 6.1: what a fleet without the hook runs); a Debian 13 host with the hook (trixie1).
"""

LAB_FLEET = ["hook=2", "nohook=1:debian612", "nohook=1:debian61", "trixie=1:patched:trixie"]
# What must hold on every Debian release and every kernel runs on these.
HOOK_HOSTS = ["hook2", "trixie1"]
NO_HOOK_HOSTS = ["nohook1", "nohook2"]
# The fleet-side tests' inventory (tests/fleet/, test_trust's playbooks): their expectations (the canary, the
# batches, each host's outcome) are written for these three.
PLAYBOOK_HOSTS = ["hook1", "hook2", "nohook1"]

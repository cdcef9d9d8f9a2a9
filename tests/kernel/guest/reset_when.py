"""Reset this (lab) host the moment a condition holds: a power cut, as far as its disk is concerned.

  python3 reset_when.py apply_starts          once bpfoomctl apply runs
  python3 reset_when.py exists PATH           once PATH exists (e.g. the new policy's last pin)

reboot(2) with LINUX_REBOOT_CMD_RESTART, called directly: no sync, no unmount, no service stopped (the
lab kernel has no magic SysRq). Gives up after 300 s.
"""

import ctypes
import os
import sys
import time

LINUX_REBOOT_CMD_RESTART = 0x01234567


def applying():
    # The bpfoomctl command runs python3 -c '...main(sys.argv))' apply DIR.
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if b"sys.argv))\0apply\0" in cmdline.read():
                        return True
            except OSError:
                pass
    return False


def main(argv):
    condition = applying if argv[1] == "apply_starts" else (lambda: os.path.exists(argv[2]))
    deadline = time.monotonic() + 300
    while not condition():
        if time.monotonic() > deadline:
            return 1
    ctypes.CDLL(None, use_errno=True).reboot(LINUX_REBOOT_CMD_RESTART)
    return 2                                    # only if the reset was refused


if __name__ == "__main__":
    sys.exit(main(sys.argv))

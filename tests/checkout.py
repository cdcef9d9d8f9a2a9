"""This checkout as the collection bpfoom.fleet, for the test tiers and the benchmarks.

Ansible and Python load the collection from <path>/ansible_collections/bpfoom/fleet: importing this
module links build/collections there to this checkout (once), puts it and the test helpers
(`fleetlab`, `policytools`) on sys.path, and sets ANSIBLE_COLLECTIONS_PATH unless the caller did.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "build" / "collections"

_link = COLLECTIONS / "ansible_collections" / "bpfoom" / "fleet"
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    _link.symlink_to(REPO, target_is_directory=True)
sys.path[:0] = [str(REPO / "tests" / "lab"), str(REPO / "tests"), str(COLLECTIONS)]
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))

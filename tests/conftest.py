"""Shared by every test tier.

- The lab tools are importable as `fleetlab`, the policy helpers as `policytools`.
- The collection is importable as `ansible_collections.bpfoom.fleet`, the
  way Ansible loads it, through build/collections (a link to this checkout).
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / "build" / "collections"

sys.path.insert(0, str(REPO / "tests" / "lab"))
sys.path.insert(0, str(REPO / "tests"))          # policytools

_link = COLLECTIONS / "ansible_collections" / "bpfoom" / "fleet"
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    _link.symlink_to(REPO, target_is_directory=True)
sys.path.insert(0, str(COLLECTIONS))
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))

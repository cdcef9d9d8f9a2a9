"""Shared by every test tier: the lab tools are importable as `fleetlab`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lab"))

"""The agent's unit tests import its package as a host does (standalone, not through the collection)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins" / "module_utils"))

"""Shared by every test tier: this checkout as the collection, and the test helpers importable
(see checkout.py)."""

import checkout  # noqa: F401  # pylint: disable=unused-import

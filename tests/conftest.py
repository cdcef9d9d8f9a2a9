"""Shared by every test tier: this checkout as the collection, and the test helpers importable
(see checkout.py); the lab tier's booted fleet (fixture `lab`), shared by tests/kernel/ and tests/fleet/."""

import os

import checkout  # noqa: F401  # pylint: disable=unused-import
import pytest
from lab_fleet import LAB_FLEET


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The booted lab fleet, one boot per session for both folders. It lives in its own lab directory, so it never
    touches a fleet a developer has up, and it is stopped (qemu processes and overlays) when the session ends,
    whatever the outcome."""
    from fleetlab import fleet  # only the lab tier needs it
    os.environ["BPFOOM_LAB_DIR"] = os.environ.get("BPFOOM_TEST_LAB_DIR") or str(tmp_path_factory.mktemp("lab"))
    try:
        fleet.up(LAB_FLEET, memory_mib=768)
        yield fleet.load_fleet()["hosts"]
    finally:
        fleet.down()

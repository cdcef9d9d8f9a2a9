"""tests/release/check_tarball_links.py, the check `make ee-context` runs on the built collection."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "release" / "check_tarball_links.py"
spec = importlib.util.spec_from_file_location("check_tarball_links", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_a_link_resolves_to_a_shipped_file_and_heading_or_is_named():
    files = {"README.md": "See [ops](docs/operations.md#metrics-and-alerts), [lab](tests/lab/README.md),\n"
                          "[web](https://example.org/x), `[not a link](nowhere.md)`, [awx](awx/).\n",
             "docs/operations.md": "# Operations\n## Metrics and alerts\n```\n## not a heading\n```\n"
                                   "[back](../README.md#nothing-here)\n",
             "awx/job_templates.yml": None}
    assert check.dead_links(files) == [
        "README.md:1: tests/lab/README.md: tests/lab/README.md is not in the collection",
        "docs/operations.md:6: ../README.md#nothing-here: README.md has no heading #nothing-here"]


def test_tests_and_dotfiles_are_out_of_place():
    files = {"README.md": "", ".gitignore": None, "changelogs/.plugin-cache.yaml": None, "tests/unit/x.py": None,
             "plugins/modules/policy.py": None}
    assert [line.split(":")[0] for line in check.out_of_place(files)] == [
        ".gitignore", "changelogs/.plugin-cache.yaml", "tests/unit/x.py"]

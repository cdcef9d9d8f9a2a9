"""Compile tier: every catalog example compiles with clang, directly and through
the policy_build action (Ansible's templar, the cache, the lock, check and diff mode)."""

import json
from pathlib import Path

import pytest
import yaml

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_compile
from policytools import EXAMPLES, build_policy
from policytools import run_playbook as playbook

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_example_compiles(example, tmp_path):
    entry = build_policy(EXAMPLES[example], tmp_path)
    manifest = json.loads((entry / "manifest.json").read_text())
    policy_hash = manifest["hash"]
    assert manifest["object_sha256"] == policy_compile.sha256_file(str(entry / "policy.bpf.o"))
    data = (entry / "policy.bpf.o").read_bytes()
    assert data[:4] == b"\x7fELF"
    for section in (b"fmod_ret/bpf_oom_evaluate_task", b"fentry/bpf_set_policy_name", b".BTF"):
        assert section in data
    assert policy_hash.encode() in data         # the object says what it is


def write_inventory(path: Path, groups: dict) -> Path:
    inventory = {"all": {"vars": {"ansible_connection": "local"}, "children": {}}}
    for group, (count, example) in groups.items():
        inventory["all"]["children"][group] = {
            "hosts": {f"{group}{index}": None for index in range(1, count + 1)},
            "vars": {"bpfoom_policy": EXAMPLES[example]},
        }
    path.write_text(yaml.safe_dump(inventory))
    return path


def run_playbook(inventory: Path, cache: Path, *extra: str, clang: str = "clang"):
    """Run build_policies.yml; return the process and the result of each build (one per distinct policy)."""
    result, report = playbook(HERE / "build_policies.yml", inventory, "-e", f"bpfoom_object_cache={cache}",
                              "-e", f"bpfoom_clang={clang}", "-f", "10", *extra, results_dir=inventory.parent)
    builds = report.get("Build each distinct policy once", {})
    return result, (next(iter(builds.values())) if builds else {})


def clang_runs(cache: Path) -> int:
    log = cache / policy_compile.CLANG_RUN_LOG
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_action_compiles_each_distinct_policy_once(tmp_path):
    inventory = write_inventory(tmp_path / "hosts.yml", {"web": (4, "prefer_avoid"), "db": (3, "cgroup_priority")})
    cache = tmp_path / "objects"

    result, report = run_playbook(inventory, cache, "--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert clang_runs(cache) == 0 and not (cache / "names").exists()       # check mode writes nothing
    builds = report["results"]
    assert len(builds) == 2                                                # one build per distinct policy
    assert all(build["changed"] and not build["compiled"] for build in builds)

    result, report = run_playbook(inventory, cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert clang_runs(cache) == 2
    builds = report["results"]
    assert {build["policy_name"] for build in builds} == {"web", "db_prio"}
    assert len({build["object"] for build in builds}) == 2
    assert all(build["compiled"] for build in builds)
    assert all(build["manifest"]["object_sha256"] == policy_compile.sha256_file(build["object"]) for build in builds)

    result, report = run_playbook(inventory, cache, "--diff")
    assert result.returncode == 0
    assert clang_runs(cache) == 2                                        # nothing new to compile
    assert not any(build["changed"] for build in report["results"])


def test_action_refuses_bad_parameters_naming_host_and_parameter(tmp_path):
    inventory = write_inventory(tmp_path / "hosts.yml", {"web": (1, "prefer_avoid")})
    result, report = run_playbook(inventory, tmp_path / "objects", "-e",
                                  '{"bpfoom_policy": {"name": "bad name", "template": "prefer_avoid", '
                                  '"params": {"avoid": {"uid": [0]}}}}')
    assert result.returncode != 0
    message = report["results"][0]["msg"]
    assert message.startswith("web1: policy 'bad name': parameter name:"), message
    assert not (tmp_path / "objects").exists()


def test_missing_clang_names_the_package(tmp_path):
    inventory = write_inventory(tmp_path / "hosts.yml", {"web": (1, "prefer_avoid")})
    result, report = run_playbook(inventory, tmp_path / "objects", clang="/nonexistent/clang")
    assert result.returncode != 0
    message = report["results"][0]["msg"]
    assert "install clang" in message and "apt-get install clang" in message, message

"""Fixtures of the host-side lab tests (the hook, the catalog's policies, the agent): helpers to drive a lab
host; the booted fleet is the `lab` fixture of tests/conftest.py."""

import json
import shlex
import subprocess
from pathlib import Path

import pytest

import policytools
from fleetlab import common, fleet

HERE = Path(__file__).resolve().parent
GUEST_DIR = "/root/bpfoom-test"
PIN_ROOT = "/sys/fs/bpf/bpfoom-test"
CORE_INCLUDE = common.REPO_ROOT / "templates" / "bpf" / "include"
OOM_SMOKE = common.REPO_ROOT / "plugins" / "module_utils" / "oom_smoke.py"
# The fleet itself (fixture `lab`) is tests/conftest.py's: the fleet-side tests (tests/fleet/) share it.


@pytest.fixture(scope="session")
def memhog(tmp_path_factory):
    binary = tmp_path_factory.mktemp("memhog") / "memhog"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(binary), str(HERE / "memhog.c")], check=True)
    return binary


def _prepare(host, memhog):
    fleet.run_on(host, f"mkdir -p {GUEST_DIR}")
    for path in (memhog, HERE / "guest" / "bpfload.py", HERE / "guest" / "oom_scenario.py", OOM_SMOKE):
        fleet.copy_to(host, path, f"{GUEST_DIR}/{path.name}")
    policytools.copy_agent_package(host, GUEST_DIR)       # bpfload.py imports the agent's libbpf bindings
    return LabHost(host)


@pytest.fixture(scope="session")
def _patched(lab, memhog):
    return _prepare(lab["hook1"], memhog)


@pytest.fixture(scope="session")
def hook2_host(prepared):
    """hook2, the agent tests' host, with the scenario tools copied."""
    return prepared("hook2")


@pytest.fixture(scope="session")
def _unpatched(lab, memhog, prepared):
    return prepared("nohook1")


@pytest.fixture(scope="session")
def prepared(lab, memhog):
    """prepared(NAME): any lab host with the scenario tools copied (once a session), for the tests that run on
    each kind of host (tests/lab_fleet.py)."""
    hosts = {}

    def get(name):
        if name not in hosts:
            hosts[name] = _prepare(lab[name], memhog)
        return hosts[name]
    return get


@pytest.fixture
def patched_host(_patched):
    """hook1, with no test policy attached before or after the test."""
    _patched.detach_all()
    yield _patched
    _patched.detach_all()


@pytest.fixture
def unpatched_host(_unpatched):
    yield _unpatched
    _unpatched.detach_all()


@pytest.fixture(scope="module")
def agent_lab(lab, tmp_path_factory):
    """Where the agent's playbooks (tests/kernel/playbooks) keep their results and compiled objects."""
    work = tmp_path_factory.mktemp("agent")
    return {"work": work, "cache": work / "objects"}


class LabHost:
    """One lab host as the kernel tests use it."""

    guest_dir = GUEST_DIR           # the scenario tools (memhog, oom_scenario.py, ...) on the host

    def __init__(self, host):
        self.host = host
        self.name = host["name"]

    def run(self, command, check=True, timeout=120):
        return fleet.run_on(self.host, command, timeout=timeout, check=check)

    def attach(self, policy: Path, pin_name: str, check=True):
        remote = f"{GUEST_DIR}/{policy.name}"
        fleet.copy_to(self.host, policy, remote)
        return self.run(f"python3 {GUEST_DIR}/bpfload.py attach {remote} {PIN_ROOT}/{pin_name}", check=check)

    def detach(self, pin_name: str):
        self.run(f"rm -rf {PIN_ROOT}/{pin_name}")

    def detach_all(self):
        self.run(f"rm -rf {PIN_ROOT}")

    def pinned_links(self, pin_name: str):
        """The links pinned under pin_name, read back from the kernel (link info)."""
        return json.loads(self.run(f"python3 {GUEST_DIR}/bpfload.py links {PIN_ROOT}/{pin_name}").stdout)

    def oom(self, limit_mib, hogs, timeout=20, before_trigger=None):
        """Run one memcg OOM scenario (see guest/oom_scenario.py) and return its outcome.

        hogs: (name, MiB) or (name, MiB, child cgroup) in start order, the trigger last.
        """
        specs = " ".join(f"{hog[0]}={hog[1]}" + (f"@{hog[2]}" if len(hog) > 2 else "") for hog in hogs)
        option = f"--before-trigger {shlex.quote(before_trigger)} " if before_trigger else ""
        result = self.run(f"python3 {GUEST_DIR}/oom_scenario.py {option}{GUEST_DIR}/memhog {limit_mib} "
                          f"{timeout} {specs}", timeout=timeout + 120)
        return json.loads(result.stdout)

    def install_agent(self):
        policytools.install_agent(self.host)

    def upload_policy(self, entry: Path) -> str:
        """Copy a built policy (policy.bpf.o, manifest.json) to the host; return its directory there."""
        remote = f"/var/lib/bpfoom/incoming/{entry.name}"
        self.run("install -d -m 0700 /var/lib/bpfoom /var/lib/bpfoom/incoming")
        policytools.upload_policy(self.host, entry, remote)
        return remote

    def bpfoomctl(self, command, check=True):
        result = self.run(f"bpfoomctl {command}", check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: bpfoomctl {command} exited {result.returncode}: "
                                 f"{result.stderr}{result.stdout}")
        return json.loads(result.stdout) if result.stdout.strip().startswith("{") else result


def build_policy(out_dir: Path, name: str, target: str = "none", on_target: str = "NO_BPF_POLICY",
                 on_other: str = "NO_BPF_POLICY") -> Path:
    """Compile tests/kernel/bpf/verdict.bpf.c into one test policy (CO-RE, clang -target bpf)."""
    out = out_dir / f"{name}.bpf.o"
    defines = {"POLICY_NAME": f'"{name}"', "TARGET_COMM": f'"{target}"',
               "ON_TARGET": on_target, "ON_OTHER": on_other}
    command = ["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{CORE_INCLUDE}",
               *[f"-D{key}={value}" for key, value in defines.items()],
               "-c", str(HERE / "bpf" / "verdict.bpf.c"), "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return out


@pytest.fixture
def policy(tmp_path):
    def make(name, **kwargs):
        return build_policy(tmp_path, name, **kwargs)
    return make


@pytest.fixture(scope="session")
def policy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("objects")


@pytest.fixture
def agent_host(_patched):
    """hook1 with bpfoomctl installed and no policy attached before or after the test."""
    _patched.install_agent()
    _patched.detach_all()
    _patched.bpfoomctl("detach")
    yield _patched
    _patched.bpfoomctl("detach")

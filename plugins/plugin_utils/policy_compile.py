# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compile rendered policies into CO-RE BPF objects, once per distinct source.

Controller side. The cache is content-addressed: the key covers the rendered
source, the headers it includes, the compiler's version and the flags. A lock
per key makes N forks that render the same policy run clang exactly once;
the others wait and reuse the object. Objects land through a temporary file
and a rename, so a reader never sees half an object.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_catalog

INCLUDE_DIR = os.path.join(policy_catalog.BPF_TEMPLATE_DIR, "include")
CFLAGS = ["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror"]
# What a missing piece is called in Debian, for the one error that names it.
PACKAGES = {"clang": "clang", "bpf/bpf_helpers.h": "libbpf-dev"}
LIBBPF_HEADER_DIRS = ("/usr/include", "/usr/local/include")
CLANG_RUN_LOG = "clang-runs.log"


class CompileError(RuntimeError):
    """The policy did not compile; the message carries clang's diagnostics or the missing package."""


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bpfoom", "objects")


def resolve_cache_dir(cache_dir: str = None) -> str:
    """The object cache a task names (cache_dir, ~ expanded), or the default one."""
    return os.path.expanduser(cache_dir or default_cache_dir())


def toolchain(clang: str = "clang", cache_dir: str = None, remember: bool = True) -> dict:
    """Find clang and libbpf's headers, or fail once, naming the packages to install.

    The compiler's version is part of every cache key. It is asked once per
    compiler binary (path, size, mtime) and remembered in the cache (unless
    remember is false: check mode writes nothing), so a fleet-wide build runs
    clang only to compile.
    """
    missing = []
    clang_path = shutil.which(clang)
    if clang_path is None:
        missing.append(PACKAGES["clang"])
    if not any(os.path.exists(os.path.join(d, "bpf", "bpf_helpers.h")) for d in LIBBPF_HEADER_DIRS):
        missing.append(PACKAGES["bpf/bpf_helpers.h"])
    if missing:
        raise CompileError(f"the controller cannot compile BPF policies: install {' '.join(missing)} "
                           f"(Debian: apt-get install {' '.join(missing)}) where ansible-playbook runs")
    cache_dir = cache_dir or default_cache_dir()
    stat = os.stat(clang_path)
    identity = hashlib.sha256(f"{clang_path} {stat.st_size} {stat.st_mtime_ns}".encode()).hexdigest()[:16]
    record = os.path.join(cache_dir, f"compiler-{identity}.txt")
    if not remember and not os.path.exists(record):
        return {"clang": clang_path, "version": _clang_version(clang_path)}
    os.makedirs(cache_dir, exist_ok=True)
    with open(record + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(record):
            with open(record + ".tmp", "w") as handle:
                handle.write(_clang_version(clang_path))
            os.replace(record + ".tmp", record)
    with open(record) as handle:
        return {"clang": clang_path, "version": handle.read().strip()}


def _clang_version(clang_path: str) -> str:
    output = subprocess.run([clang_path, "--version"], capture_output=True, text=True, check=False,
                            env=dict(os.environ, LANG="C")).stdout
    return output.splitlines()[0] if output else "unknown"


def cache_key(source: str, tools: dict) -> str:
    digest = hashlib.sha256()
    for part in (source, tools["version"], " ".join(CFLAGS)):
        digest.update(hashlib.sha256(part.encode()).digest())
    for name in sorted(os.listdir(INCLUDE_DIR)):
        with open(os.path.join(INCLUDE_DIR, name), "rb") as header:
            digest.update(hashlib.sha256(name.encode() + header.read()).digest())
    return digest.hexdigest()


def sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def lookup(cache_dir: str, key: str):
    """The cached object's manifest, or None."""
    manifest = os.path.join(cache_dir, key, "manifest.json")
    if not os.path.exists(manifest):
        return None
    with open(manifest) as handle:
        return json.load(handle)


def build(source: str, manifest: dict, cache_dir: str, tools: dict, key: str = None) -> tuple:
    """Compile source unless its object is cached; return (manifest, compiled).

    key: cache_key(source, tools) when the caller has it already.
    """
    key = key or cache_key(source, tools)
    entry = os.path.join(cache_dir, key)
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, f"{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = lookup(cache_dir, key)
        if cached is not None:
            return cached, False
        work = tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cache_dir)
        try:
            with open(os.path.join(work, "policy.bpf.c"), "w") as handle:
                handle.write(source)
            command = [tools["clang"], *CFLAGS, f"-I{INCLUDE_DIR}", "-c", "policy.bpf.c", "-o", "policy.bpf.o"]
            result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False,
                                    env=dict(os.environ, LANG="C"))
            with open(os.path.join(cache_dir, CLANG_RUN_LOG), "a") as runs:
                runs.write(f"{key} {manifest['name']} rc={result.returncode}\n")
            if result.returncode != 0:
                raise CompileError(f"clang failed on policy {manifest['name']!r}:\n{result.stderr.strip()[-3000:]}")
            manifest = dict(manifest, key=key, clang=tools["version"], cflags=CFLAGS,
                            object_sha256=sha256_file(os.path.join(work, "policy.bpf.o")))
            with open(os.path.join(work, "manifest.json"), "w") as handle:
                json.dump(manifest, handle, indent=2, sort_keys=True)
            os.rename(work, entry)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return manifest, True


def build_policy(policy: dict, cache_dir: str = None, clang: str = "clang", check_mode: bool = False) -> dict:
    """The one way a policy value becomes an object: validate, render, make the manifest, compile (cached).

    The policy_build action, the tests and the benchmarks all call this. In
    check mode nothing is written: the result says what would be built.
    Raises policy_catalog.PolicyError or CompileError with a message naming
    the parameter or the missing package.
    """
    spec = policy_catalog.validate(policy)
    source, policy_hash = policy_catalog.render(spec)
    manifest = policy_catalog.manifest(spec, policy_hash)
    cache_dir = resolve_cache_dir(cache_dir)
    tools = toolchain(clang, cache_dir, remember=not check_mode)
    key = cache_key(source, tools)
    cached = lookup(cache_dir, key)
    if check_mode:
        built, compiled = cached or manifest, False
    else:
        built, compiled = build(source, manifest, cache_dir, tools, key)
    entry = os.path.join(cache_dir, key)
    return {
        "changed": cached is None,
        "compiled": compiled,
        "policy_name": spec["name"],
        "policy_hash": policy_hash,
        "template": spec["template"],
        "key": key,
        "manifest": built,
        "object": os.path.join(entry, "policy.bpf.o"),
        "source": os.path.join(entry, "policy.bpf.c"),
        "source_text": source,
    }

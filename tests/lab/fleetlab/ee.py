"""The execution environment of ee/execution-environment.yml, built for real with podman, for the lab tier.

No registry is reachable here, so the base image is made from Debian packages
(mmdebstrap with the machine's own apt sources, as the lab's host image) and
imported into podman; the project's definition is then built on it by
ansible-builder with what a Debian base needs swapped in: the base image, the
package manager (apt-get for dnf), and pip from the image (Debian's python
refuses ensurepip). Everything else (ansible-core, ansible-runner, the
collection and its own metadata, ansible.cfg) is the definition users build.
The base image already holds the collection's system dependencies
(meta/ee-bindep.txt, dpkg platform), so bindep finds nothing to install and
the build needs no Debian mirror; its pip steps reach PyPI, trusting what this
machine trusts (its CA bundle is copied in).

Rootful podman with the runc runtime and cgroupfs (this machine's cgroups are
v1, which crun refuses), configured through CONTAINERS_CONF: the machine's
/etc/containers is never written. Both images are cached by content.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from .common import REPO_ROOT, LabError, cache_dir, content_key, elapsed, ensure_apt_packages, locked, say
from .image import machine_apt_sources

SUITE = "bookworm"
DEFINITION = REPO_ROOT / "ee" / "execution-environment.yml"
COLLECTION_METADATA = [REPO_ROOT / "meta" / name for name in
                       ("execution-environment.yml", "ee-bindep.txt", "ee-requirements.txt")]
# The interpreter and pip of the definition's python stages, SSH for the hosts, and meta/ee-bindep.txt's
# dpkg packages (installed here so that no build step needs a Debian mirror).
BASE_PACKAGES = ["python3.11", "python3-pip", "python3-venv", "openssh-client", "ca-certificates",
                 "clang", "libbpf-dev"]
# This machine's trust store goes in (the build's pip reaches PyPI through it); apt's sources do not.
BASE_CUSTOMIZE = ('cp /etc/ssl/certs/ca-certificates.crt "$1"/etc/ssl/certs/ca-certificates.crt && '
                  'rm -f "$1"/etc/apt/sources.list')
BUILD_DEPENDENCIES = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}
CONTAINERS_CONF = """\
# bpfoom.fleet's lab: rootful podman on a machine with cgroups v1 (crun refuses them).
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""


def podman_env() -> dict:
    """The environment podman (and ansible-builder, ansible-runner calling it) runs with here."""
    conf = cache_dir() / "ee" / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def _podman(*args, check=True, **kwargs):
    return subprocess.run(["podman", *args], env=podman_env(), check=check, **kwargs)


def _image_exists(tag: str) -> bool:
    return _podman("image", "exists", tag, check=False).returncode == 0


def base_image() -> str:
    """The Debian base image's tag, imported into podman once per recipe."""
    ensure_apt_packages(BUILD_DEPENDENCIES)
    recipe = content_key(SUITE, " ".join(BASE_PACKAGES), BASE_CUSTOMIZE, Path("/etc/ssl/certs/ca-certificates.crt"))
    tag = "localhost/bpfoom-ee-base:" + recipe
    with locked(cache_dir() / "ee" / "build.lock"):
        if _image_exists(tag):
            return tag
        start = time.monotonic()
        work = cache_dir() / "ee" / "base.partial"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "sources.list").write_text(machine_apt_sources(SUITE))
        say(f"building the execution environment's {SUITE} base image with mmdebstrap")
        command = ["mmdebstrap", "--variant=minbase", "--format=tar", "--mode=root",
                   f"--include={','.join(BASE_PACKAGES)}", "--dpkgopt=path-exclude=/usr/share/doc/*",
                   "--dpkgopt=path-exclude=/usr/share/man/*", f"--customize-hook={BASE_CUSTOMIZE}",
                   SUITE, str(work / "base.tar"), str(work / "sources.list")]
        with open(work / "mmdebstrap.log", "w") as log:
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise LabError(f"mmdebstrap failed: {work / 'mmdebstrap.log'}")
        _podman("import", str(work / "base.tar"), tag, capture_output=True)
        shutil.rmtree(work)
        _remove_other_tags("localhost/bpfoom-ee-base", tag)
        say(f"base image {tag} in {elapsed(start)}")
    return tag


def build_collection(out: Path) -> Path:
    """This checkout as a collection tarball, named as the definition installs it (as `make ee-context` does)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(out), str(REPO_ROOT)],
                   check=True, capture_output=True)
    return next(out.glob("bpfoom-fleet-*.tar.gz")).rename(out / "bpfoom-fleet.tar.gz")


def lab_definition(base: str, collection: Path, work: Path) -> Path:
    """ee/execution-environment.yml with the lab's base image and apt-get; its files by absolute path."""
    definition = yaml.safe_load(DEFINITION.read_text())
    definition["images"]["base_image"]["name"] = base
    definition["options"]["package_manager_path"] = "/usr/bin/apt-get"
    definition["options"]["skip_pip_install"] = True          # python3-pip is in the base
    # CentOS's CRB repository (for libbpf-devel) has no Debian counterpart: libbpf-dev is in the base.
    del definition["additional_build_steps"]["prepend_base"]
    for entry in definition["additional_build_files"]:
        source = (DEFINITION.parent / entry["src"]).resolve()
        entry["src"] = str(collection if source.name == "bpfoom-fleet.tar.gz" else source)
    path = work / "execution-environment.yml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def image() -> str:
    """The execution environment's tag, built when the definition, the collection or the base changed."""
    base = base_image()
    work = cache_dir() / "ee" / "build"
    collection = build_collection(work / "collection")
    # The tarball's bytes carry build times: key on the collection's file list and contents instead.
    listing = subprocess.run(["tar", "-xOzf", str(collection)], capture_output=True, check=True).stdout
    tag = "localhost/bpfoom-fleet-ee:lab-" + content_key(base, DEFINITION, *COLLECTION_METADATA, listing,
                                                         Path(__file__).read_bytes())
    with locked(cache_dir() / "ee" / "build.lock"):
        if _image_exists(tag):
            return tag
        start = time.monotonic()
        say(f"building the execution environment {tag} (ansible-builder, podman)")
        definition = lab_definition(base, collection, work)
        result = subprocess.run(["ansible-builder", "build", "-f", str(definition), "-c", str(work / "context"),
                                 "-t", tag, "--container-runtime", "podman", "-v", "2"],
                                env=podman_env(), capture_output=True, text=True, check=False)
        (work / "build.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise LabError(f"ansible-builder build failed (log: {work / 'build.log'}):\n{result.stdout[-3000:]}")
        say(f"execution environment {tag} in {elapsed(start)}")
        _remove_other_tags("localhost/bpfoom-fleet-ee", tag)
    return tag


def _remove_other_tags(repository: str, keep: str) -> None:
    """Older lab builds go, and the build's intermediate images: each is hundreds of MiB of podman's storage."""
    listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}", repository,
                     capture_output=True, text=True).stdout.split()
    for old in set(listed) - {keep}:
        _podman("rmi", old, check=False, capture_output=True)
    _podman("image", "prune", "--force", check=False, capture_output=True)

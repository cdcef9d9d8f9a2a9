"""awx/job_templates.yml against the argument specs of AWX's own collection, as a loader would pass them.

infra.aap_configuration hands each entry of controller_templates, controller_workflows, ... to one
awx.awx (or ansible.controller) module, key for key. Those modules are not installable from a
registry on their own; they ship inside PyPI's `ansible` package, of which this test takes awx.awx
24.6.1 (cached by version). Each module's argument_spec is read by running its main() up to the
point where it builds its ControllerAPIModule, and the entry is validated by ansible-core's own
ArgumentSpecValidator: an unknown key, a wrong type or a value out of its choices fails, as the
module would fail on a controller. A workflow's nodes are a list of dicts to the argument spec;
they are checked against the suboptions the module documents for them.
The rules AWX applies on top (a launch or a schedule answers every required question) are in
tests/unit/test_awx_model.py.
"""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from fleetlab import awx

ANSIBLE_PACKAGE = "ansible==12.3.0"          # its awx.awx is 24.6.1, the AWX the definitions were loaded into
AWX_COLLECTION_VERSION = "24.6.1"
MODULE_OF = {                                # infra.aap_configuration's variable -> the module it feeds
    "controller_execution_environments": "execution_environment",
    "controller_projects": "project",
    "controller_templates": "job_template",
    "controller_notifications": "notification_template",
    "controller_workflows": "workflow_job_template",
    "controller_schedules": "schedule",
}


@pytest.fixture(scope="module")
def awx_modules() -> Path:
    """awx.awx's modules directory, extracted once from the `ansible` wheel into the lab's cache."""
    cache = Path(os.environ.get("BPFOOM_LAB_CACHE", Path.home() / ".cache" / "bpfoom-lab"))
    root = cache / f"awx.awx-{AWX_COLLECTION_VERSION}"
    modules = root / "ansible_collections" / "awx" / "awx" / "plugins" / "modules"
    if not modules.is_dir():
        wheels = cache / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        "-d", str(wheels), ANSIBLE_PACKAGE], check=True)
        wheel = next(wheels.glob(f"ansible-{ANSIBLE_PACKAGE.split('==')[1]}-*.whl"))
        partial = root.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(partial, [name for name in archive.namelist()
                                         if name.startswith("ansible_collections/awx/awx/")])
        partial.rename(root)
    manifest = json.loads((root / "ansible_collections" / "awx" / "awx" / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == AWX_COLLECTION_VERSION
    return modules


class _SpecRead(Exception):
    pass


def argument_spec(modules: Path, name: str) -> dict:
    """The module's argument_spec, as its main() hands it to ControllerAPIModule (run that far, no further)."""
    source = (modules / f"{name}.py").read_text()
    source = source.replace("from ..module_utils.controller_api import ControllerAPIModule", "")
    spec = {}

    def capture(argument_spec=None, **_kwargs):
        spec.update(argument_spec)
        raise _SpecRead

    namespace = {"__name__": f"awx_{name}", "ControllerAPIModule": capture}
    exec(compile(source, str(modules / f"{name}.py"), "exec"), namespace)     # noqa: S102 - AWX's own module
    with pytest.raises(_SpecRead):
        namespace["main"]()
    return spec


def documented_suboptions(modules: Path, name: str, option: str) -> dict:
    """An option's suboptions as the module documents them, as an argument spec."""
    source = (modules / f"{name}.py").read_text()
    documentation = yaml.safe_load(re.search(r"DOCUMENTATION = '''(.*?)'''", source, re.S)[1])

    def spec_of(options):
        return {key: {**{field: value[field] for field in ("type", "elements", "choices", "required", "aliases")
                         if field in value},
                      **({"options": spec_of(value["suboptions"])} if "suboptions" in value else {})}
                for key, value in options.items()}
    return spec_of(documentation["options"][option]["suboptions"])


def problems(spec: dict, entry: dict) -> list:
    result = ArgumentSpecValidator(spec).validate(entry)
    return [str(error) for error in result.errors]


def entries() -> list:
    return [pytest.param(variable, item, id=f"{variable}:{item['name']}")
            for variable, items in awx.definitions().items() for item in items]


def test_every_variable_of_the_file_is_one_a_loader_knows():
    assert set(awx.definitions()) <= set(MODULE_OF), set(awx.definitions()) - set(MODULE_OF)


@pytest.mark.parametrize(("variable", "entry"), entries())
def test_each_entry_is_what_its_awx_module_accepts(awx_modules, variable, entry):
    name = MODULE_OF[variable]
    assert problems(argument_spec(awx_modules, name), entry) == []
    if name == "workflow_job_template":
        node_spec = documented_suboptions(awx_modules, name, "workflow_nodes")
        for node in entry["workflow_nodes"]:
            assert problems(node_spec, node) == [], node["identifier"]


def test_a_mistyped_or_unknown_key_fails(awx_modules):
    spec = argument_spec(awx_modules, "job_template")
    template = dict(awx.job_template("bpfoom verify"))
    assert any("ask_limit_on_lunch" in problem
               for problem in problems(spec, {**template, "ask_limit_on_lunch": True})), "unknown key passed"
    assert problems(spec, {**template, "job_slice_count": "four"}), "a string passed as an int"
    assert problems(spec, {**template, "job_type": "dry-run"}), "a value out of its choices passed"
    node_spec = documented_suboptions(awx_modules, "workflow_job_template", "workflow_nodes")
    assert problems(node_spec, {"identifier": "x", "related": {"success_node": [{"identifier": "y"}]}})


def test_the_image_is_the_collections_release_and_is_never_kept_stale():
    [environment] = awx.definitions()["controller_execution_environments"]
    version = yaml.safe_load((awx.common.REPO_ROOT / "galaxy.yml").read_text())["version"]
    assert environment["image"].endswith(f":{version}") and environment["pull"] == "always", environment


def test_a_project_synced_on_launch_is_synced_once_per_workflow_not_once_per_job():
    for project in awx.definitions()["controller_projects"]:
        assert project["scm_type"] != "manual" or not project.get("scm_update_on_launch"), project   # AWX refuses
        if project.get("scm_update_on_launch"):
            assert project.get("scm_update_cache_timeout", 0) > 0, project

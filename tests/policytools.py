"""Build catalog policies outside Ansible, for the test tiers and benchmarks.

The catalog's own validation and C literals, plain Jinja with the options the
policy_build action gives Ansible's templar, and the real compile cache.
"""

import os
from pathlib import Path

import jinja2
import yaml

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_catalog, policy_compile

EXAMPLES = yaml.safe_load((Path(__file__).resolve().parent / "policy_examples.yml").read_text())


def jinja_render(path, variables):
    loader = jinja2.FileSystemLoader([os.path.dirname(path), policy_catalog.BPF_TEMPLATE_DIR])
    env = jinja2.Environment(loader=loader, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(os.path.basename(path)).render(variables)


def build_policy(args: dict, cache_dir) -> Path:
    """Validate, render and compile; return the cache entry (policy.bpf.o, manifest.json)."""
    spec = policy_catalog.validate(args)
    source, policy_hash = policy_catalog.render(spec, jinja_render)
    manifest = {"name": spec["name"], "hash": policy_hash, "template": spec["template"],
                "host_params": policy_catalog.host_params(spec)}
    built, _compiled = policy_compile.build(source, manifest, str(cache_dir),
                                            policy_compile.toolchain("clang", str(cache_dir)))
    return Path(cache_dir) / built["key"]

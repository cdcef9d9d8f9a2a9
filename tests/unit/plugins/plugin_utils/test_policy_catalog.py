"""Unit tests of the policy catalog: validation, the injection catalog, rendering."""

from __future__ import annotations

import re

import pytest
from policytools import EXAMPLES

from ansible_collections.bpfoom.fleet.plugins.plugin_utils import policy_catalog as catalog
from ansible_collections.bpfoom.fleet.plugins.plugin_utils.policy_catalog import PolicyError


def render(args):
    return catalog.render(catalog.validate(args))


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_documented_example_renders(example):
    source, policy_hash = render(EXAMPLES[example])
    assert 'SEC("fmod_ret/bpf_oom_evaluate_task")' in source
    assert 'SEC("fentry/bpf_set_policy_name")' in source
    assert catalog.c_string(EXAMPLES[example]["name"], 16) in source
    assert catalog.c_string(policy_hash, 65) in source
    assert catalog.HASH_PLACEHOLDER not in source


def test_rendering_is_deterministic_and_the_hash_follows_the_parameters():
    first, first_hash = render(EXAMPLES["prefer_avoid"])
    again, again_hash = render(EXAMPLES["prefer_avoid"])
    assert (first, first_hash) == (again, again_hash)
    changed = dict(EXAMPLES["prefer_avoid"], tie_breaker="youngest")
    assert render(changed)[1] != first_hash


def test_strict_is_the_only_way_to_never_kill():
    lenient, _hash = render(EXAMPLES["prefer_avoid"])
    strict, _hash = render(EXAMPLES["prefer_avoid_strict"])
    assert "return BPFOOM_RANK_NEVER;" in strict
    assert "return BPFOOM_RANK_NEVER;" not in lenient


def test_cgroup_priority_ranks_the_lowest_priority_highest():
    spec = catalog.validate(EXAMPLES["cgroup_priority"])
    source, _hash = catalog.render(spec)
    assert "#define DEFAULT_RANK 500" in source
    assert catalog.manifest(spec, "0" * 64)["host_inputs"] == [{"map": "priority_units", "units": [
        {"name": "postgresql.service", "value": 0}, {"name": "backup.service", "value": 900}]}]


def test_unit_names_are_part_of_the_source_so_of_the_hash():
    spec = catalog.validate(EXAMPLES["prefer_avoid"])
    source, first_hash = catalog.render(spec)
    assert catalog.c_string("postgresql.service", 256) in source
    assert "BPFOOM_UNIT_MAP(avoid_units);" in source and "BPFOOM_UNIT_MAP(prefer_units);" in source
    params = dict(EXAMPLES["prefer_avoid"]["params"], avoid={"cgroup": ["ssh.service"], "uid": [0]})
    other = dict(EXAMPLES["prefer_avoid"], params=params)
    assert render(other)[1] != first_hash


def test_comm_patterns_are_words_and_masks():
    exact = catalog.comm_pattern("sshd", exact=True)
    prefix = catalog.comm_pattern("sshd", exact=False)
    assert exact == ("{ { 0x0000000064687373ULL, 0x0000000000000000ULL }, "
                     "{ 0x000000ffffffffffULL, 0x0000000000000000ULL } }")
    assert prefix.endswith("{ 0x00000000ffffffffULL, 0x0000000000000000ULL } }")
    assert catalog.comm_pattern("x" * 15, exact=True).endswith("0xffffffffffffffffULL } }")


def test_c_string_escapes_every_byte():
    assert catalog.c_string('a"b', 16) == '"\\x61\\x22\\x62"'


def test_the_manifest_names_the_host_inputs_of_select_pid():
    spec = catalog.validate(EXAMPLES["select_pid_unit"])
    manifest = catalog.manifest(spec, "0" * 64)
    assert manifest["host_inputs"] == [{"map": "bpfoom_target_pids", "pid_of": {"unit": "memcached.service"}}]
    source, _hash = catalog.render(spec)
    assert "bpfoom_target_pids SEC(\".maps\")" in source          # the map the agent fills exists
    assert catalog.manifest(catalog.validate(EXAMPLES["prefer_avoid"]), "0" * 64)["host_inputs"] == [
        {"map": "prefer_units", "units": [{"name": "batch.slice", "value": 1}]},
        {"map": "avoid_units", "units": [{"name": "sshd.service", "value": 1}, {"name": "postgresql.service", "value": 1}]}]


def test_protection_by_a_command_name_alone_is_refused_naming_the_risk_and_the_safe_form():
    with pytest.raises(PolicyError) as refused:
        catalog.validate({"name": "p", "template": PA, "params": {"avoid": {"comm": ["postgres"]}}})
    message = str(refused.value)
    assert message.startswith("params.avoid.comm: ")
    assert "prctl(PR_SET_NAME)" in message                            # the risk
    assert "avoid.uid" in message and "avoid.cgroup" in message       # the safe form
    assert catalog.FORGEABLE_FLAG in message                          # the opt-in
    with pytest.raises(PolicyError, match="^params.avoid.comm_prefix: "):
        catalog.validate({"name": "p", "template": PA, "strict": True, "params": {"avoid": {"comm_prefix": ["pg"]}}})


def test_a_command_name_qualified_by_a_vouched_identity_protects_only_with_it():
    spec = catalog.validate({"name": "p", "template": PA, "params": {"avoid": {"comm": ["postgres"], "uid": [105]}}})
    source, _hash = catalog.render(spec)
    assert "(!AVOID_COMM_COUNT || comm_in(&comm, avoid_comm, AVOID_COMM_COUNT, basis))" in source


def test_the_forgeable_opt_in_is_explicit_and_changes_the_hash():
    risky = {"name": "p", "template": PA, catalog.FORGEABLE_FLAG: True, "params": {"avoid": {"comm": ["postgres"]}}}
    source, risky_hash = render(risky)
    assert "protect_by_forgeable_comm: any process can take" in source
    qualified = {"name": "p", "template": PA, "params": {"avoid": {"comm": ["postgres"], "uid": [105]}}}
    assert render(dict(qualified, **{catalog.FORGEABLE_FLAG: False}))[1] == render(qualified)[1]
    assert render(dict(qualified, **{catalog.FORGEABLE_FLAG: True}))[1] != render(qualified)[1]
    with pytest.raises(PolicyError, match=f"^{catalog.FORGEABLE_FLAG}: only prefer_avoid"):
        catalog.validate({"name": "p", "template": "select_pid", catalog.FORGEABLE_FLAG: True,
                          "params": {"unit": "x.service"}})
    with pytest.raises(PolicyError, match=f"^{catalog.FORGEABLE_FLAG}: must be true or false"):
        catalog.validate(dict(risky, **{catalog.FORGEABLE_FLAG: "yes"}))


def test_preferring_may_use_any_identity():
    catalog.validate({"name": "p", "template": PA, "params": {"prefer": {"comm": ["report-gen"]}}})


def test_every_matcher_is_classified_and_the_docs_state_the_classification():
    docs = (catalog.BPF_TEMPLATE_DIR.rsplit("/templates", 1)[0] + "/docs/docsite/rst/policies.rst")
    text = open(docs).read()
    for matcher, (trust, _what) in catalog.MATCHERS.items():
        assert trust in (catalog.CHOSEN_BY_PROCESS, catalog.VOUCHED)
        assert re.search(rf"^``{matcher}``\s+{trust}\s", text, re.M), matcher      # a row of the guide's table


def test_the_manifest_carries_every_object_property():
    spec = catalog.validate(EXAMPLES["cgroup_priority"])
    manifest = catalog.manifest(spec, "ab" * 32)
    assert manifest == {"name": "db_prio", "hash": "ab" * 32, "template": "cgroup_priority", "tie_breaker": "youngest",
                        "strict": False, "host_inputs": catalog.CATALOG["cgroup_priority"].host_inputs(spec["params"])}


def test_the_mode_is_the_hosts_not_the_objects_and_is_checked():
    assert render(dict(EXAMPLES["prefer_avoid"], mode="shadow")) == render(EXAMPLES["prefer_avoid"])
    with pytest.raises(PolicyError, match="mode: 'dry' is not one of enforce, shadow"):
        catalog.validate(dict(EXAMPLES["prefer_avoid"], mode="dry"))


def test_the_smoke_section_is_part_of_the_policy_value_not_of_the_object():
    with_smoke = dict(EXAMPLES["prefer_avoid"], smoke={"limit_mib": 128})
    assert render(with_smoke) == render(EXAMPLES["prefer_avoid"])
    with pytest.raises(PolicyError, match="^policy: unknown key"):
        catalog.validate(dict(EXAMPLES["prefer_avoid"], moed="shadow"))


def test_a_template_may_not_reach_host_variables(tmp_path):
    template = tmp_path / "peek.bpf.c.j2"
    template.write_text('{% extends "frame.bpf.c.j2" %}\n{% block rank %}\n\treturn {{ inventory_hostname }};\n'
                        '{% endblock %}\n')
    with pytest.raises(PolicyError, match="inventory_hostname"):
        render({"name": "peek", "template_file": str(template)})


def test_custom_template_gets_literals(tmp_path):
    template = tmp_path / "mine.bpf.c.j2"
    template.write_text('{% extends "frame.bpf.c.j2" %}\n{% block rank %}\n'
                        '\treturn task->tgid == {{ c.params.pid }} ? 1 : 0; /* {{ c.params.label }} */\n{% endblock %}\n')
    source, _hash = render({"name": "mine", "template_file": str(template), "params": {"pid": 42, "label": "x*/y"}})
    assert "task->tgid == (42) ? 1 : 0;" in source
    assert "x*/y" not in source and '"\\x78\\x2a\\x2f\\x79"' in source


def test_custom_template_must_extend_the_frame(tmp_path):
    template = tmp_path / "bare.bpf.c.j2"
    template.write_text("int x;\n")
    with pytest.raises(PolicyError, match="does not extend frame.bpf.c.j2"):
        render({"name": "bare", "template_file": str(template)})


# The injection catalog: each case must be refused with a message naming the parameter.
PA = "prefer_avoid"
INJECTIONS = [
    ({"name": 'a"b', "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a\\b", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a\nb", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a*/b", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a b", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a,b", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a=b", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "a\x00b", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "caf\u00e9", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "x" * 16, "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": 12, "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "ok", "template": "x; system()", "params": {}}, "template"),
    ({"name": "ok", "template": PA, "tie_breaker": "random", "params": {"avoid": {"uid": [0]}}}, "tie_breaker"),
    ({"name": "ok", "template": PA, "strict": "yes", "params": {"avoid": {"uid": [0]}}}, "strict"),
    ({"name": "ok", "template": "cgroup_priority", "strict": True,
      "params": {"priorities": [{"cgroup": "a.slice", "priority": 1}]}}, "strict"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": ['sh"; }']}}}, "params.prefer.comm[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": ["sh\\x00"]}}}, "params.prefer.comm[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": ["a\nb"]}}}, "params.prefer.comm[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": ["#include <x>"]}}}, "params.prefer.comm[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": ["100%d"]}}}, "params.prefer.comm[0]"),
    ({"name": "50%", "template": PA, "params": {"avoid": {"uid": [0]}}}, "name"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": ["x" * 16]}}}, "params.prefer.comm[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm_prefix": ["\u00fc"]}}}, "params.prefer.comm_prefix[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": [""]}}}, "params.prefer.comm[0]"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": []}}}, "params.prefer.comm"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"comm": "sshd"}}}, "params.prefer.comm"),
    ({"name": "ok", "template": PA, "params": {"prefer": {}}}, "params.prefer"),
    ({"name": "ok", "template": PA, "params": {}}, "params"),
    ({"name": "ok", "template": PA, "params": {"prefer": {"pid": [1]}}}, "params.prefer"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"cgroup": ["*/ int x; /*.service"]}}}, "params.avoid.cgroup[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"cgroup": ["../etc.slice"]}}}, "params.avoid.cgroup[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"cgroup": ["sshd"]}}}, "params.avoid.cgroup[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"uid": [-1]}}}, "params.avoid.uid[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"uid": [2**32]}}}, "params.avoid.uid[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"uid": ["0"]}}}, "params.avoid.uid[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"uid": [True]}}}, "params.avoid.uid[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"uid": [1.5]}}}, "params.avoid.uid[0]"),
    ({"name": "ok", "template": PA, "params": {"avoid": {"uid": list(range(17))}}}, "params.avoid.uid"),
    ({"name": "ok", "template": "select_pid", "params": {"unit": "a.service; rm -rf /"}}, "params.unit"),
    ({"name": "ok", "template": "select_pid", "params": {"unit": "nginx"}}, "params.unit"),
    ({"name": "ok", "template": "select_pid", "params": {"pidfile": "run/x.pid"}}, "params.pidfile"),
    ({"name": "ok", "template": "select_pid", "params": {"pidfile": "/run/../etc/shadow"}}, "params.pidfile"),
    ({"name": "ok", "template": "select_pid", "params": {"pidfile": "/run/x.pid\n"}}, "params.pidfile"),
    ({"name": "ok", "template": "select_pid", "params": {"pidfile": "/run/x*/y"}}, "params.pidfile"),
    ({"name": "ok", "template": "select_pid", "params": {"unit": "a.service", "pidfile": "/run/a"}}, "params"),
    ({"name": "ok", "template": "select_pid", "params": {}}, "params"),
    ({"name": "ok", "template": "cgroup_priority", "params": {"priorities": []}}, "params.priorities"),
    ({"name": "ok", "template": "cgroup_priority",
      "params": {"priorities": [{"cgroup": "a.slice", "priority": -1}]}}, "params.priorities[0].priority"),
    ({"name": "ok", "template": "cgroup_priority",
      "params": {"priorities": [{"cgroup": "a.slice", "priority": 10**12}]}}, "params.priorities[0].priority"),
    ({"name": "ok", "template": "cgroup_priority",
      "params": {"priorities": [{"cgroup": "a.slice"}]}}, "params.priorities[0]"),
    ({"name": "ok", "template": "cgroup_priority",
      "params": {"priorities": [{"cgroup": "a.slice", "priority": 1}, {"cgroup": "a.slice", "priority": 2}]}},
     "params.priorities"),
    ({"name": "ok", "template": "cgroup_priority",
      "params": {"priorities": [{"cgroup": "a.slice", "priority": 1}], "default_priority": "high"}},
     "params.default_priority"),
    ({"name": "ok", "template": PA, "template_file": "/tmp/x.j2", "params": {}}, "template"),
    ({"name": "ok", "template_file": "relative.j2"}, "template_file"),
    ({"name": "ok", "template_file": "/nonexistent/policy.bpf.c.j2"}, "template_file"),
]


@pytest.mark.parametrize("args, parameter", INJECTIONS,
                         ids=lambda value: value if isinstance(value, str) else None)
def test_injection_catalog_is_refused_naming_the_parameter(args, parameter, tmp_path):
    with pytest.raises(PolicyError) as refused:
        catalog.validate(args)
    assert str(refused.value).startswith(f"{parameter}:"), str(refused.value)
    assert list(tmp_path.iterdir()) == []       # validation writes nothing


def test_custom_params_are_checked(tmp_path):
    template = tmp_path / "mine.bpf.c.j2"
    template.write_text('{% extends "frame.bpf.c.j2" %}\n')
    for params, parameter in (({"Bad-Key": 1}, "params"), ({"x": 2**40}, "params.x"),
                              ({"x": "a\nb"}, "params.x"), ({"x": [1]}, "params.x")):
        with pytest.raises(PolicyError, match=f"^{parameter}:"):
            catalog.validate({"name": "mine", "template_file": str(template), "params": params})


def test_the_build_accepts_every_key_the_catalog_does_and_offers_exactly_its_templates():
    # The argument spec validates first: a policy key it lacks fails every build of a policy using it (as
    # protect_by_forgeable_comm did), a template it lists that the catalog lacks is a choice that fails later.
    from ansible_collections.bpfoom.fleet.plugins.module_utils import policy_build_args as args
    assert set(catalog.POLICY_KEYS) == set(args.POLICY_SPEC)
    assert args.POLICY_SPEC["template"]["choices"] == list(catalog.TEMPLATES)
    assert args.POLICY_SPEC["tie_breaker"]["choices"] == list(catalog.TIE_BREAKERS)

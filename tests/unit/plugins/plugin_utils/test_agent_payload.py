"""What the controller sends each host inside its module execution, and what it keeps of it."""

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.agent_payload import without_payload


def test_a_result_keeps_the_names_of_the_payload_not_its_contents():
    result = {"changed": True, "invocation": {"module_args": {"mode": "enforce", "policy_object": "QUJD" * 100,
                                                              "agent_files": {"bpfoomctl/cli.py": "eA==" * 50}}}}
    args = without_payload(result)["invocation"]["module_args"]
    assert args == {"mode": "enforce", "policy_object": "(400 characters of base64, left out)",
                    "agent_files": {"bpfoomctl/cli.py": "(200 characters of base64, left out)"}}
    assert without_payload({"failed": True, "msg": "unreachable"}) == {"failed": True, "msg": "unreachable"}

# Copyright: bpfoom.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What verify says of a host: computed here, in Python, from the modules' results (filter bpfoom.fleet.verify_host;
the rollout's report is plugin_utils/rollout_report.py)."""

from __future__ import annotations

from ansible_collections.bpfoom.fleet.plugins.module_utils.host_mode import mode_on_host

VERIFY_HEADER = ["HOST", "GROUP", "HOOK", "POLICY", "HASH", "MODE", "ATTACHED", "WOULD KILL NOW", "SMOKE"]


def _task(task):
    return f"{task['comm']}[{task['pid']}]" if task else None


def _would_kill(info):
    """The WOULD KILL NOW cell: the policy's victim now, beside the kernel's own when they differ."""
    explain, error = info.get("explain") or {}, info.get("explain_error")
    victim = explain.get("would_kill")
    if not victim:
        return f"? {error[:40]}" if error else "-"
    if explain.get("agrees"):
        return _task(victim)
    kernel = explain.get("kernel_would_kill")
    return f"{_task(victim)} (kernel: {_task(kernel) or 'none[-]'})"


def _smoke_cell(smoke, expected):
    if not isinstance(smoke, dict) or smoke.get("skipped") or smoke.get("ran") is False:     # skipped, check mode
        return "-"
    return f"{smoke.get('victim') or 'none'} (expected {expected})"


def verify_host(info, host, group, build, policy_mode=None, unpatched="fail", smoke=None, smoke_expected=None,
                proven=None):
    """verify's verdict on one host, from bpfoom.fleet.policy_info's result (info) and the build of the policy its
    group should run: {"verdict": the report's fields, "row": the table's cells, "mismatch": why the host fails,
    or None; "unproven": why it fails in a workflow whose canary did not prove its policy, or None}."""
    attached = info.get("attached_policy") or {}
    hook = bool(info.get("hook"))
    expected_mode = mode_on_host(policy_mode, hook, unpatched) or policy_mode or "enforce"
    runs_something = hook or expected_mode == "shadow"       # a host with no hook and nothing to run there
    explain = info.get("explain") or {}
    verdict = {
        "host": host, "group": group, "hook": hook, "kernel_release": info.get("kernel_release"),
        "policy_name": attached.get("policy_name"), "policy_hash": attached.get("policy_hash"),
        "mode": attached.get("mode"),
        "expected_name": build["policy_name"], "expected_hash": build["policy_hash"], "expected_mode": expected_mode,
        "attached": attached.get("policy_hash") == build["policy_hash"] and attached.get("mode") == expected_mode,
        "would_kill": explain.get("would_kill"), "kernel_would_kill": explain.get("kernel_would_kill"),
        "explain_error": info.get("explain_error"),
        "smoke_victim": smoke.get("victim") if isinstance(smoke, dict) else None, "smoke_expected": smoke_expected,
        "input_problems": list(info.get("input_problems") or []),
    }
    row = [host, group, "yes" if hook else "no", verdict["policy_name"] or "-", (verdict["policy_hash"] or "-")[:12],
           verdict["mode"] or "-", "yes" if verdict["attached"] else "NO" if runs_something else "no hook",
           _would_kill(info), _smoke_cell(smoke, smoke_expected)]
    mismatch = None
    if not verdict["attached"] and (runs_something or unpatched == "fail"):
        # Modes are named only when one side is shadow: an enforcing fleet reads as before.
        modes = "shadow" in (verdict["mode"], expected_mode)
        runs = f"{verdict['policy_name'] or 'no policy'}" + (f" ({verdict['mode']})" if modes else "")
        should = f"{build['policy_name']} ({build['policy_hash'][:12]}" + (f", {expected_mode})" if modes else ")")
        mismatch = (f"{host} runs {runs}, its group {group} should run {should}"
                    + ("" if runs_something else ": its kernel has no BPF OOM hook"))
    unproven = None
    if proven is not None and build["policy_hash"] not in proven and runs_something:
        unproven = (f"{host} should run {build['policy_name']} ({build['policy_hash'][:12]}) by this job's policy map, "
                    f"which is not a policy this workflow's canary proved ({', '.join(proven.values()) or 'none'}): "
                    "the map or the collection differs between this job and the rollout's")
    return {"verdict": verdict, "row": row, "mismatch": mismatch, "unproven": unproven}


def verify_fleet(plan, hostvars, builds, unpatched="fail", proven=None, fail_on_input_problems=False,
                 fail_on_mismatch=True):
    """verify's verdicts on every host of the plan that was read, in one pass (each host's vars read once):
    {"rows": the table's rows, "verdicts": the report's, "warnings": lines for what a policy names that does not
    resolve on its host, "failures": {host: why it fails}}. A host's own failure is the first of: what its policy
    names that does not resolve (fail_on_input_problems), a policy the workflow's canary did not prove, a mismatch
    (fail_on_mismatch)."""
    rows, verdicts, warnings, failures = [], [], [], {}
    for host, planned in ((plan or {}).get("hosts") or {}).items():
        host_vars = hostvars[host]
        info = host_vars.get("_bpfoom_info")
        if not isinstance(info, dict) or "hook" not in info:
            continue                    # not read: Ansible reports the host as failed or unreachable
        policy = plan["policies"][planned["policy"]]
        smoke = policy.get("smoke") or {}
        checked = verify_host(info, host, planned["group"], builds[planned["policy"]], policy.get("mode", "enforce"),
                              unpatched, host_vars.get("_bpfoom_smoke"), smoke.get("expect_victim"), proven)
        rows.append(checked["row"])
        verdicts.append(checked["verdict"])
        named, problems = f"{host}: policy {checked['verdict']['policy_name']}", checked["verdict"]["input_problems"]
        if not fail_on_input_problems:
            warnings.extend(f"[WARNING] {named}: {problem}" for problem in problems)
        failure = (f"{named}: {'; '.join(problems)}" if problems and fail_on_input_problems else None) \
            or checked["unproven"] or (checked["mismatch"] if fail_on_mismatch else None)
        if failure:
            failures[host] = failure
    return {"rows": rows, "verdicts": verdicts, "warnings": warnings, "failures": failures}

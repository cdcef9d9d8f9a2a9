"""Lab tier of issue 21: the operator decides who dies, not the processes.

On hook1 with the agent and its unit (the role), the catalog's templates, real
users and systemd's own units: a tenant's process named after an avoided
command, a tenant's cgroup named after an avoided unit (through its systemd
user manager), select_pid's target restarting, the README's policy on Debian
(sshd.service is an alias there). Every OOM is a memcg OOM of a slice of its
own (bpfoomtest.slice, 96 MiB, no swap), each hog a transient unit in it.
"""

import json
import re
import time

import pytest

from policytools import build_policy
from fleetlab import fleet

from ansible_collections.bpfoom.fleet.plugins.plugin_utils.policy_catalog import PolicyError

pytestmark = pytest.mark.lab

SLICE = "bpfoomtest.slice"
MEMHOG = "/usr/local/bin/bpfoomtest-memhog"
TENANT = "tenant"                   # an unprivileged user with a systemd user manager (linger)
SERVICE_USER = "pgsvc"              # the real service's user
METRICS_DIR = "/var/lib/prometheus/node-exporter"
INPUTS_MESSAGE_ID = "c0b5a3e1d7f24e8b9a6c2d1e0f3b4a57"
# Every trigger (the hog that pushes the slice over its limit) runs at nice 19, as the smoke test's does: at nice 0
# it can retry its charge after the victim is marked done and before its pages are freed, and a second OOM kills
# again (SECOND_OOM_RACE in plugins/module_utils/oom_smoke.py; seen here as select_pid's test killing big too).
TRIGGER = "--nice=19"


@pytest.fixture(scope="module")
def host(_patched, lab, agent_lab):
    """hook1 with the agent's unit running (the role), a tenant with a user manager, the memhog for all."""
    from test_agent import play
    _patched.run(f"install -d -m 0755 {METRICS_DIR}")      # node_exporter's textfile directory: the agent writes there
    process, _results = play(agent_lab, "agent.yml", "hook1")
    assert process.returncode == 0, process.stdout[-3000:]
    # The unit may have been running since an earlier test: its sandbox sees the metrics directory only
    # if it existed when the agent started.
    _patched.run("systemctl restart bpfoom.service")
    _patched.run(f"install -m 0755 {_patched.guest_dir}/memhog {MEMHOG}; "
                 f"id {TENANT} >/dev/null 2>&1 || useradd --create-home {TENANT}; "
                 f"id {SERVICE_USER} >/dev/null 2>&1 || useradd --system {SERVICE_USER}; "
                 f"loginctl enable-linger {TENANT}; "
                 f"printf '[Slice]\\nMemoryMax=96M\\nMemorySwapMax=0\\n' > /run/systemd/system/{SLICE}; "
                 "systemctl daemon-reload")
    uid = int(_patched.run(f"id -u {TENANT}").stdout)
    deadline = time.monotonic() + 60
    while _patched.run(f"systemctl is-active user@{uid}.service", check=False).stdout.strip() != "active":
        assert time.monotonic() < deadline, "the tenant's user manager did not start"
        time.sleep(1)
    _patched.tenant_uid = uid
    _patched.service_uid = int(_patched.run(f"id -u {SERVICE_USER}").stdout)
    yield _patched
    _patched.run(f"systemctl stop {SLICE}; rm -f /run/systemd/system/{SLICE}; loginctl disable-linger {TENANT}; "
                 "systemctl disable --now bpfoom.service; systemctl daemon-reload", check=False)
    _patched.bpfoomctl("detach")                # and forget the desired policy: hook1 as the other tests expect it


def apply(host, cache, policy):
    remote = host.upload_policy(build_policy(policy, cache))
    result = host.bpfoomctl(f"apply {remote}")
    assert result["status"]["attached_policy"]["policy_name"] == policy["name"], result
    return result


def hog(host, unit, name, mib, user=None, extra=""):
    """A memhog NAME MIB as the transient system unit UNIT in the test slice (as USER if given)."""
    as_user = f"--uid={user} " if user else ""
    host.run(f"systemctl reset-failed {unit} 2>/dev/null; systemd-run --quiet --unit={unit} --slice={SLICE} "
             f"{as_user}{extra} {MEMHOG} {name} {mib}")


def user_hog(host, unit, name, mib, extra=""):
    """A memhog as the tenant's own unit, through its systemd user manager: a cgroup the tenant owns."""
    host.run(f"runuser -u {TENANT} -- env XDG_RUNTIME_DIR=/run/user/{host.tenant_uid} "
             f"systemd-run --user --quiet --unit={unit} {extra} {MEMHOG} {name} {mib}")


def wait_charged(host, cgroup, mib, timeout=30):
    """Until cgroup (a path under /sys/fs/cgroup) holds at least MIB MiB."""
    deadline = time.monotonic() + timeout
    while True:
        current = host.run(f"cat /sys/fs/cgroup{cgroup}/memory.current 2>/dev/null || echo 0").stdout
        if int(current) >= mib << 20:
            return
        assert time.monotonic() < deadline, f"{cgroup} never held {mib} MiB"
        time.sleep(0.5)


def killed(host, count, timeout=30):
    """The (pid, comm) of the first COUNT OOM kills in the kernel's log since dmesg -C."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(r"Killed process (\d+) \((\S+)\)", host.run("dmesg").stdout)
        if len(found) >= count or time.monotonic() > deadline:
            return [(int(pid), comm) for pid, comm in found]
        time.sleep(0.5)


def stop_units(host, *units):
    host.run(f"systemctl stop {' '.join(units)} 2>/dev/null; systemctl reset-failed {' '.join(units)} 2>/dev/null; "
             "true", check=False)


def test_a_tenant_process_named_after_an_avoided_command_is_not_protected(host, policy_cache):
    # The name alone protects nothing: the catalog refuses it, naming the safe form.
    with pytest.raises(PolicyError, match=r"params.avoid.comm: .*prctl\(PR_SET_NAME\).*avoid.uid"):
        build_policy({"name": "pg_by_name", "template": "prefer_avoid",
                      "params": {"avoid": {"comm": ["postgres"]}}}, policy_cache)
    apply(host, policy_cache, {"name": "pg_by_uid", "template": "prefer_avoid",
                               "params": {"avoid": {"comm": ["postgres"], "uid": [host.service_uid]}}})
    host.run("dmesg -C")
    try:
        hog(host, "realpg", "postgres", 20, user=SERVICE_USER)
        hog(host, "forger", "postgres", 40, user=TENANT)         # the tenant calls its hog postgres
        hog(host, "worker", "worker", 10, user=TENANT)
        wait_charged(host, f"/{SLICE}", 68)
        hog(host, "trigger", "trigger", 28, user=TENANT, extra=TRIGGER)
        kills = killed(host, 1)
    finally:
        stop_units(host, "realpg", "forger", "worker", "trigger")
    assert kills and kills[0][1] == "postgres", kills
    forger_pid = kills[0][0]
    # The one killed is the forger (the tenant's), not the real service.
    journal = host.run(f"journalctl -k --no-pager | grep -E 'Killed process {forger_pid} ' | tail -1").stdout
    assert f"UID:{host.tenant_uid} " in journal, journal
    assert "policy_name=pg_by_uid" in host.run("dmesg").stdout


def test_in_a_global_oom_the_forger_dies_and_the_real_services_live(host, policy_cache):
    """The tenant's hog takes nearly all the host's memory and calls itself postgres: the kernel's global OOM
    kills it, not the real postgres (the service's user) nor the host's services."""
    apply(host, policy_cache, {"name": "pg_global", "template": "prefer_avoid",
                               "params": {"avoid": {"comm": ["postgres"], "uid": [host.service_uid]}}})
    host.run("dmesg -C")
    try:
        host.run(f"systemd-run --quiet --unit=realpg --uid={SERVICE_USER} {MEMHOG} postgres 16")
        wait_charged(host, "/system.slice/realpg.service", 16)
        hog = host.run(f"total=$(awk '/MemTotal/ {{print int($2 / 1024)}}' /proc/meminfo); "
                       f"timeout 300 runuser -u {TENANT} -- {MEMHOG} postgres $((total - 16)); echo exit=$?",
                       check=False, timeout=400)
        deadline = time.monotonic() + 60
        while not fleet.ssh_ready(host.host):
            assert time.monotonic() < deadline, "the host no longer answers SSH after the global OOM"
            time.sleep(2)
        kernel_log = host.run("dmesg").stdout
        real_alive = host.run("systemctl is-active realpg.service", check=False).stdout.strip()
    finally:
        stop_units(host, "realpg")
    assert "exit=137" in hog.stdout, hog                               # SIGKILL: the OOM killer's
    assert "constraint=CONSTRAINT_NONE" in kernel_log, kernel_log        # a global OOM
    assert "policy_name=pg_global" in kernel_log, kernel_log
    kills = re.findall(r"Killed process \d+ \((\S+)\) .*UID:(\d+)", kernel_log)
    assert kills == [("postgres", str(host.tenant_uid))], kernel_log      # the forger, and nothing else
    assert real_alive == "active"


def tenant_oom(host, policy, policy_cache, mode="enforce"):
    """The tenant's memcg OOM (its user manager limited to 96 MiB) beside a real system unit postgresql.service:
    the tenant runs its own postgresql.service (a cgroup it owns, named after the real one), a worker, a
    trigger. Returns (explain before the trigger, the first kills, the bpfoom journal entries as JSON)."""
    uid, remote = host.tenant_uid, host.upload_policy(build_policy(policy, policy_cache))
    host.bpfoomctl(f"apply --mode={mode} {remote}")
    manager = f"user@{uid}.service"
    host.run(f"systemctl set-property --runtime {manager} MemoryMax=96M MemorySwapMax=0")
    host.run("dmesg -C; journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1; true")
    user_systemctl = f"runuser -u {TENANT} -- env XDG_RUNTIME_DIR=/run/user/{uid} systemctl --user"
    stop_user = (f"{user_systemctl} stop postgresql worker trigger; "
                 f"{user_systemctl} reset-failed postgresql worker trigger 2>/dev/null; true")
    try:
        hog(host, "postgresql", "postgres", 8)                  # the real system unit, in the test slice
        user_hog(host, "postgresql", "postgres", 50)             # .../user@UID.service/app.slice/postgresql.service
        user_hog(host, "worker", "worker", 20)
        wait_charged(host, f"/user.slice/user-{uid}.slice/{manager}", 70)
        explained = host.bpfoomctl("explain --top=10000")
        user_hog(host, "trigger", "trigger", 28, extra=TRIGGER)
        kills = killed(host, 1)
        time.sleep(3)                                            # the agent's events loop polls every 2 s
        entries = [json.loads(line) for line in
                   host.run("journalctl -t bpfoom -o json --no-pager").stdout.splitlines()]
    finally:
        host.run(stop_user, check=False)
        stop_units(host, "postgresql")
        host.run(f"systemctl set-property --runtime {manager} MemoryMax=infinity", check=False)
    return explained, kills, entries


def test_a_tenant_cgroup_named_after_an_avoided_unit_is_not_protected(host, policy_cache):
    uid = host.tenant_uid
    fake_cgroup = f"/user.slice/user-{uid}.slice/user@{uid}.service/app.slice/postgresql.service"
    explained, kills, _entries = tenant_oom(host, {"name": "keep_pg", "template": "prefer_avoid",
                                                   "params": {"avoid": {"cgroup": ["postgresql.service"]}}},
                                            policy_cache)
    by_cgroup = {task["cgroup"]: task for task in explained["candidates"]}
    real, fake = by_cgroup[f"/{SLICE}/postgresql.service"], by_cgroup[fake_cgroup]
    assert real["rank"] == 0 and real["decided_by"]["matched"] == ["cgroup"], real        # protected, and why
    assert real["decided_by"]["cgroup_vouched"] and real["decided_by"]["cgroup_owner"] == 0, real
    assert fake["rank"] == 1 and "cgroup" not in fake["decided_by"]["matched"], fake      # not protected
    assert kills and kills[0][1] == "postgres", kills                 # the tenant's fake unit, the largest


def test_a_shadow_entry_names_the_identity_its_choice_rested_on(host, policy_cache):
    """Preferring by a cgroup name may use any owner's cgroup: the shadow policy picks the tenant's unit, and its
    journal entry says which cgroup decided, its owner, and that root does not vouch for it."""
    uid = host.tenant_uid
    fake_cgroup = f"/user.slice/user-{uid}.slice/user@{uid}.service/app.slice/postgresql.service"
    _explained, kills, entries = tenant_oom(host, {"name": "prefer_pg", "template": "prefer_avoid",
                                                   "params": {"prefer": {"cgroup": ["postgresql.service"]}}},
                                            policy_cache, mode="shadow")
    shadow = [entry for entry in entries if entry.get("BPFOOM_MODE") == "shadow"]
    assert shadow, entries
    entry = shadow[0]
    assert entry["BPFOOM_POLICY_VICTIM_COMM"] == "postgres" and int(entry["BPFOOM_POLICY_VICTIM_UID"]) == uid, entry
    assert entry["BPFOOM_POLICY_VICTIM_MATCHED"] == "cgroup", entry
    assert entry["BPFOOM_POLICY_VICTIM_MATCHED_CGROUP"] == fake_cgroup, entry
    assert int(entry["BPFOOM_POLICY_VICTIM_MATCHED_CGROUP_OWNER"]) == uid, entry
    assert entry["BPFOOM_POLICY_VICTIM_MATCHED_CGROUP_VOUCHED"] == "0", entry
    assert f"cgroup {fake_cgroup} (owner uid {uid}, not vouched for: may not protect)" in entry["MESSAGE"], entry


def target_pid(host):
    status = host.bpfoomctl("status")
    return next((r["pid"] for r in status["host_inputs"] if "target" in r), None), status


def wait_target(host, not_pid, timeout=30):
    """Until the running agent has made the policy select a new PID (not not_pid); returns it."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status = target_pid(host)
        if pid and pid != not_pid and not status["input_problems"]:
            return pid
        assert time.monotonic() < deadline, f"the agent never followed the target: {status['host_inputs']}"
        time.sleep(1)


def restart_twice(host, policy_cache, policy, start_target, target_main_pid):
    """Two OOMs with a restart of the target between them and no rollout: both kill the target."""
    host.run("dmesg -C")
    hog(host, "big", "big", 50)
    start_target()
    wait_charged(host, f"/{SLICE}", 60)
    apply(host, policy_cache, policy)
    first = wait_target(host, None)
    assert first == target_main_pid()
    hog(host, "trigger1", "trigger", 40, extra=f"{TRIGGER} --property=RuntimeMaxSec=3")
    kills = killed(host, 1)
    assert kills == [(first, "target")], kills
    second = wait_target(host, first)                  # restarted (after trigger1 ended) with a new PID, and followed
    hog(host, "trigger2", "trigger", 40, extra=TRIGGER)
    kills = killed(host, 2)
    assert kills == [(first, "target"), (second, "target")], kills   # not big, the largest


def test_select_pid_follows_a_unit_across_restarts(host, policy_cache):
    def start():
        hog(host, "target", "target", 10, extra="--property=Restart=always --property=RestartSec=6")

    def main_pid():
        return int(host.run("systemctl show -p MainPID --value target.service").stdout)
    try:
        restart_twice(host, policy_cache, {"name": "kill_target", "template": "select_pid",
                                           "params": {"unit": "target.service"}}, start, main_pid)
        host.run("systemctl stop target.service")          # a transient unit: gone once stopped
        time.sleep(3)
        status = host.bpfoomctl("status")
        assert status["input_problems"] == [
            "target.service is no unit on this host: the policy selects nobody until it runs"], status
        # The metrics (every 10 s) and the journal say it too.
        line = 'bpfoom_host_input_ok{map="bpfoom_target_pids",input="target.service"} 0'
        deadline = time.monotonic() + 30
        read = f"cat {METRICS_DIR}/bpfoom.prom 2>/dev/null || true"
        while line not in host.run(read).stdout:
            assert time.monotonic() < deadline, host.run(read).stdout
            time.sleep(2)
        journal = host.run(f"journalctl MESSAGE_ID={INPUTS_MESSAGE_ID} -o cat --no-pager").stdout
        assert "bpfoom policy kill_target: target.service: target.service is no unit on this host" in journal, journal
        assert "bpfoom policy kill_target: target.service: now PID" in journal, journal
    finally:
        stop_units(host, "big", "target", "trigger1", "trigger2")


def test_select_pid_follows_a_pidfile_across_restarts(host, policy_cache):
    pidfile = "/run/bpfoomtest-target.pid"

    def start():
        # OOMPolicy=continue: systemd would otherwise stop the whole unit (the loop) after the first OOM kill.
        host.run(f"systemd-run --quiet --unit=pidtarget --slice={SLICE} --property=OOMPolicy=continue sh -c "
                 f"'while :; do {MEMHOG} target 10 & echo $! > {pidfile}; wait; sleep 6; done'")

    def main_pid():
        return int(host.run(f"cat {pidfile}").stdout)
    try:
        restart_twice(host, policy_cache, {"name": "kill_pidfile", "template": "select_pid",
                                           "params": {"pidfile": pidfile}}, start, main_pid)
    finally:
        stop_units(host, "big", "pidtarget", "trigger1", "trigger2")


def test_a_pid_with_another_start_time_is_never_selected(host, policy_cache):
    """PID reuse, forced: the map names the live target's PID with another start time (what a recycled PID
    looks like to the policy). The agent is stopped, so nothing corrects it; the kernel chooses as usual."""
    pidfile = "/run/bpfoomtest-reused.pid"
    host.run("systemctl stop bpfoom.service")
    try:
        host.run("dmesg -C")
        hog(host, "big", "big", 50)
        hog(host, "target", "target", 10)
        wait_charged(host, f"/{SLICE}", 60)
        host.run(f"systemctl show -p MainPID --value target.service > {pidfile}")
        result = apply(host, policy_cache, {"name": "kill_reused", "template": "select_pid",
                                            "params": {"pidfile": pidfile}})
        pid = result["host_inputs"][0]["pid"]
        key = " ".join(f"{b:02x}" for b in pid.to_bytes(4, "little"))
        pins = f"/sys/fs/bpf/bpfoom/{result['policy_hash']}/input-bpfoom_target_pids"
        host.run(f"bpftool map update pinned {pins} key hex {key} value hex 01 00 00 00 00 00 00 00")
        hog(host, "trigger", "trigger", 40, extra=TRIGGER)
        kills = killed(host, 1)
        assert kills and kills[0][1] == "big", kills          # the kernel's choice, not the stale PID
    finally:
        stop_units(host, "big", "target", "trigger")
        host.run("systemctl start bpfoom.service")


README_POLICY = {"name": "web", "template": "prefer_avoid",
                 "params": {"prefer": {"comm_prefix": ["report-"]}, "avoid": {"cgroup": ["sshd.service"]}}}


def test_the_readme_policy_protects_sshd_on_debian_and_a_missing_unit_is_reported(host, policy_cache):
    result = apply(host, policy_cache, README_POLICY)
    assert "avoid_units: sshd.service is ssh.service" in result["notes"], result["notes"]
    # sshd's listener sets its own oom_score_adj to -1000 (no OOM kills it); a process of its unit that does
    # not (a helper sshd would start) is the policy's to protect.
    helper = host.run("sleep 600 >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        host.run(f"echo {helper} > /sys/fs/cgroup/system.slice/ssh.service/cgroup.procs")
        explained = host.bpfoomctl("explain --top=10000")      # every candidate: the protected rank last
    finally:
        host.run(f"kill {helper}", check=False)
    ssh_unit = {"matched": ["cgroup"], "uid": 0, "cgroup": "/system.slice/ssh.service", "cgroup_owner": 0,
                "cgroup_vouched": True}
    listener = [task for task in explained["kernel_exempt"] if task["comm"] == "sshd"]
    assert listener and listener[0]["rank"] == 0 and listener[0]["decided_by"] == ssh_unit, explained["kernel_exempt"]
    helped = [task for task in explained["candidates"] if task["pid"] == int(helper)]
    assert helped and helped[0]["rank"] == 0 and helped[0]["decided_by"] == ssh_unit, explained["candidates"]
    assert explained["would_kill"]["cgroup"] != "/system.slice/ssh.service"
    missing = dict(README_POLICY, name="web_typo",
                   params={"avoid": {"cgroup": ["ngnix.service"]}})
    result = apply(host, policy_cache, missing)
    problem = "ngnix.service: no such unit on this host, so the policy matches nothing by this name"
    assert result["input_problems"] == [problem], result
    assert host.bpfoomctl("status")["input_problems"] == [problem]


def test_explain_ranks_by_what_the_running_policy_holds_and_a_preview_by_what_the_host_says(host, policy_cache):
    """explain of the running policy shares its pinned units map (what an OOM now would decide by); explain DIR
    resolves the names anew. The agent, frozen, cannot refresh the map the test empties."""
    remote = host.upload_policy(build_policy(README_POLICY, policy_cache))
    host.bpfoomctl(f"apply {remote}")
    helper = host.run("sleep 600 >/dev/null 2>&1 & echo $!").stdout.strip()
    pin = host.run("ls -d /sys/fs/bpf/bpfoom/*/input-avoid_units").stdout.strip()
    host.run("systemctl kill --signal=SIGSTOP bpfoom.service")
    try:
        host.run(f"echo {helper} > /sys/fs/cgroup/system.slice/ssh.service/cgroup.procs")
        for entry in json.loads(host.run(f"bpftool -j map dump pinned {pin}").stdout):
            host.run(f"bpftool map delete pinned {pin} key {' '.join(entry['key'])}")
        running = host.bpfoomctl("explain --top=10000")
        preview = host.bpfoomctl(f"explain --top=10000 {remote}")
    finally:
        host.run(f"kill {helper}; systemctl kill --signal=SIGCONT bpfoom.service", check=False)
    rank = {name: [task["rank"] for task in explained["candidates"] if task["pid"] == int(helper)]
            for name, explained in (("running", running), ("preview", preview))}
    assert rank == {"running": [1], "preview": [0]}, rank


def test_playbooks_report_a_missing_unit_and_refuse_bad_settings_before_touching_a_host(host, policy_cache,
                                                                                        tmp_path):
    """Through the playbooks, as an operator runs them: the rollout's task warns that the policy names a unit
    the host lacks, and verify says it again; wrong settings stop the run before any host is touched."""
    from fleetlab import image
    from lab_fleet import PLAYBOOK_HOSTS
    from policytools import run_playbook
    typo = {"name": "web_typo", "template": "prefer_avoid", "params": {"avoid": {"cgroup": ["ngnix.service"]}}}
    inventory = fleet.inventory_directory(tmp_path / "inventory", {
        "all": {"agent_manage_packages": False, "bpfoom_object_cache": str(policy_cache),
                "ansible_user": image.SUDO_USER, "bpfoom_canary_smoke": False},
        "hook": {"bpfoom_group": "hook", "bpfoom_policy": typo}}, only=PLAYBOOK_HOSTS)

    def playbook(name, **extra_vars):
        process, _results = run_playbook(f"bpfoom.fleet.{name}", inventory, "-e",
                                         json.dumps(dict(bpfoom_hosts="hook1", **extra_vars)),
                                         results_dir=tmp_path, timeout=900)
        return process
    problem = "ngnix.service: no such unit on this host, so the policy matches nothing by this name"
    rolled = playbook("rollout")
    assert rolled.returncode == 0, rolled.stdout[-3000:]
    warnings = " ".join(rolled.stderr.split())                   # Ansible wraps a warning's lines
    assert f"[WARNING]: policy web_typo: {problem}" in warnings, rolled.stderr[-3000:]       # the task's warning
    assert f"WARNING: {problem}" in rolled.stdout, rolled.stdout[-3000:]                     # and the report's
    verified = playbook("verify")
    assert verified.returncode == 0, verified.stdout[-3000:]
    assert f"[WARNING] hook1: policy web_typo: {problem}" in verified.stdout, verified.stdout[-3000:]
    strict = playbook("verify", bpfoom_fail_on_input_problems=True)
    assert strict.returncode != 0 and f"hook1: policy web_typo: {problem}" in strict.stdout, strict.stdout[-3000:]
    before = host.bpfoomctl("status")["attached_policy"]
    for name, settings, refusal in (
            ("rollout", {"bpfoom_batches": "0"}, "bpfoom_batches[0] is '0': each batch is a number of hosts from 1"),
            ("rollout", {"bpfoom_wave_percent": -5}, "bpfoom_wave_percent is -5: give a whole number of percent"),
            ("rollback", {"bpfoom_rollback_from": "not-a-hash"}, "bpfoom_rollback_from is 'not-a-hash': give a "
                                                                 "policy hash as bpfoom.fleet.policy_info")):
        refused = playbook(name, **settings)
        assert refused.returncode != 0 and refusal in refused.stdout, refused.stdout[-3000:]
    assert host.bpfoomctl("status")["attached_policy"] == before              # no host was touched
    nobody = playbook("rollback", bpfoom_rollback_from="0" * 64)
    assert nobody.returncode == 0 and f"No host of this run runs policy {'0' * 64}" in nobody.stdout, \
        nobody.stdout[-3000:]

"""Masakari's own client code against medevac's Masakari API, unchanged: the real
`openstack` CLI with python-masakariclient 8.9.0 (segments, their hosts, notifications),
and masakari-monitors 22.0.0's host, process and instance monitors sending their
reports through their own SendNotification, and its `masakari-processmonitor` and
`masakari-hostmonitor` services run as processes of their own; medevac served by
uvicorn on loopback, its store on SQLite and on PostgreSQL. The clients run in the
lab's venv, where they are installed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from medevac.api import create_app
from medevac.config import Settings
from medevac.lab.layout import LabError, find_lab_python
from medevac.monitor.hosts import HostMonitor, HostState
from medevac.storage import Database
from tests.conftest import ADMIN_TOKEN, READER_TOKEN, wait_for
from tests.monitor_fakes import KEY, PowerOn, Sink
from tests.serving import served

pytestmark = pytest.mark.databases

HERE = Path(__file__).parent
ME = socket.gethostname()  # what masakari-monitors' process and instance monitors report
HOSTS = ("h1", "h2", ME)
SERVER = "0a6c6e35-1111-4c2d-9a57-0123456789ab"


def _lab_bin() -> Path | None:
    try:
        return find_lab_python().parent
    except LabError:
        return None


LAB_BIN = _lab_bin()
if LAB_BIN is None or not (LAB_BIN / "openstack").exists():
    pytest.skip("the lab venv with python-masakariclient is not installed", allow_module_level=True)


class Nova:
    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {h: {"state": "up"} for h in HOSTS}


@dataclass
class Served:
    url: str
    monitor: HostMonitor

    @property
    def endpoint(self) -> str:
        return f"{self.url}/instance-ha/v1"

    def api(self, path: str) -> Any:
        r = httpx.get(
            f"{self.endpoint}/{path}",
            headers={"X-Auth-Token": ADMIN_TOKEN, "OpenStack-API-Version": "instance-ha 1.3"},
        )
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def medevac(settings: Settings, db: Database) -> Iterator[Served]:
    monitor = HostMonitor(dict.fromkeys(HOSTS, "z"), KEY, Sink(), PowerOn(), Nova())
    with served(create_app(settings, db, monitor=monitor)) as url:
        yield Served(url, monitor)


def openstack(
    server: Served, *args: str, token: str = ADMIN_TOKEN
) -> subprocess.CompletedProcess[str]:
    """The real `openstack` command, with keystoneauth's admin_token plugin."""
    assert LAB_BIN is not None
    env = {
        "PATH": f"{LAB_BIN}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "OS_AUTH_TYPE": "admin_token",
        "OS_ENDPOINT": server.endpoint,
        "OS_TOKEN": token,
    }
    return subprocess.run(
        [str(LAB_BIN / "openstack"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def as_json(server: Served, *args: str) -> Any:
    result = openstack(server, *args, "-f", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_openstack_segment_and_notification_commands(medevac: Served) -> None:
    seg = as_json(medevac, "segment", "create", "seg1", "auto", "COMPUTE")
    assert (seg["name"], seg["recovery_method"], seg["is_enabled"]) == ("seg1", "auto", True)
    as_json(medevac, "segment", "create", "seg2", "rh_priority", "COMPUTE")
    listed = as_json(medevac, "segment", "list")
    assert sorted(s["name"] for s in listed) == ["seg1", "seg2"]
    shown = as_json(medevac, "segment", "show", "seg1")
    assert shown["uuid"] == seg["uuid"]
    updated = as_json(
        medevac, "segment", "update", "seg1", "--recovery_method", "reserved_host",
        "--is_enabled", "False", "--description", "rack 1",
    )  # fmt: skip
    assert (updated["recovery_method"], updated["is_enabled"]) == ("reserved_host", False)
    assert as_json(medevac, "segment", "update", "seg1", "--is_enabled", "True")["is_enabled"]
    taken = openstack(medevac, "segment", "create", "seg2", "auto", "COMPUTE")
    assert "already exists" in taken.stdout + taken.stderr
    openstack(medevac, "segment", "delete", "seg2")
    assert [s["name"] for s in as_json(medevac, "segment", "list")] == ["seg1"]

    h1 = as_json(medevac, "segment", "host", "create", "h1", "COMPUTE", "SSH", "seg1")
    assert (h1["failover_segment_id"], h1["reserved"]) == (seg["uuid"], False)
    as_json(
        medevac, "segment", "host", "create", "h2", "COMPUTE", "SSH", "seg1", "--reserved", "True"
    )
    hosts = as_json(medevac, "segment", "host", "list", "seg1", "--sort", "name:asc")
    assert [(h["name"], h["reserved"]) for h in hosts] == [("h1", False), ("h2", True)]
    reserved = as_json(medevac, "segment", "host", "list", "seg1", "--filters", "reserved=True")
    assert [h["name"] for h in reserved] == ["h2"]
    h2 = as_json(medevac, "segment", "host", "update", "seg1", "h2", "--reserved", "False")
    assert h2["reserved"] is False
    unknown = openstack(medevac, "segment", "host", "create", "nowhere", "COMPUTE", "SSH", "seg1")
    assert "could not be found" in unknown.stdout + unknown.stderr

    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    payload = json.dumps({"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"})
    n = as_json(medevac, "notification", "create", "COMPUTE_HOST", "h1", now, payload)
    assert (n["type"], n["status"], n["source_host_uuid"]) == ("COMPUTE_HOST", "new", h1["uuid"])
    assert medevac.monitor.hosts["h1"].state in (HostState.SUSPECT, HostState.LOST)
    assert [x["notification_uuid"] for x in as_json(medevac, "notification", "list")] == [
        n["notification_uuid"]
    ]
    shown_n = as_json(medevac, "notification", "show", n["notification_uuid"])
    assert shown_n["payload"]["event"] == "STOPPED"
    assert "recovery_workflow_details" in shown_n
    again = openstack(medevac, "notification", "create", "COMPUTE_HOST", "h1", now, payload)
    assert "maintenance" in again.stdout + again.stderr
    refused = openstack(medevac, "segment", "create", "seg3", "auto", "COMPUTE", token=READER_TOKEN)
    assert refused.returncode != 0 or "403" in refused.stdout + refused.stderr
    assert [s["name"] for s in as_json(medevac, "segment", "list")] == ["seg1"]


def test_masakari_monitors_report_to_medevac_unchanged(medevac: Served, tmp_path: Path) -> None:
    seg = as_json(medevac, "segment", "create", "seg1", "auto", "COMPUTE")
    for host in ("h2", ME):
        as_json(medevac, "segment", "host", "create", host, "COMPUTE", "SSH", seg["uuid"])
    config = tmp_path / "masakarimonitors.conf"
    config.write_text(
        "[api]\nauth_type = admin_token\n"
        f"endpoint = {medevac.endpoint}\ntoken = {ADMIN_TOKEN}\n"
        "region = RegionOne\napi_interface = public\n"
        "[host]\ndisable_ipmi_check = True\napi_retry_max = 0\napi_retry_interval = 0\n"
        "[process]\nrestart_retries = 1\nrestart_interval = 0\n"
        "api_retry_max = 0\napi_retry_interval = 0\n"
        "[callback]\nretry_max = 0\nretry_interval = 0\n"
    )
    assert LAB_BIN is not None
    sent = subprocess.run(
        [
            str(LAB_BIN / "python"),
            str(HERE / "masakari_monitors_send.py"),
            str(config),
            "h2",
            SERVER,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sent.returncode == 0 and "sent" in sent.stdout, sent.stderr
    got = {n["type"]: n for n in medevac.api("notifications")["notifications"]}
    assert set(got) == {"COMPUTE_HOST", "PROCESS", "VM"}, got
    host = got["COMPUTE_HOST"]
    assert host["payload"] == {
        "event": "STOPPED",
        "cluster_status": "OFFLINE",
        "host_status": "NORMAL",
    }
    assert host["status"] == "new"  # a suspicion, confirmed by medevac's own checks
    assert medevac.monitor.hosts["h2"].state in (HostState.SUSPECT, HostState.LOST)
    process = got["PROCESS"]
    assert process["payload"] == {
        "event": "STOPPED",
        "process_name": "nova-compute --medevac-test-absent",
    }
    # No agent of medevac runs on this machine: its own checks decide, and say why not.
    assert process["status"] == "ignored" and "agent" in process["message"]
    vm = got["VM"]
    assert vm["payload"]["instance_uuid"] == SERVER
    assert vm["payload"]["vir_domain_event"] == "STOPPED_FAILED"
    assert vm["status"] == "ignored" and "agent" in vm["message"]


def test_masakari_processmonitor_running_reports_a_process_it_cannot_restart(
    medevac: Served, tmp_path: Path
) -> None:
    """The `masakari-processmonitor` service itself, unchanged and not root: it finds a
    listed process missing from `ps -ef`, fails to restart it, and reports it."""
    assert LAB_BIN is not None
    seg = as_json(medevac, "segment", "create", "seg1", "auto", "COMPUTE")
    as_json(medevac, "segment", "host", "create", ME, "COMPUTE", "SSH", seg["uuid"])
    # A name no process's command line holds (this test's own paths included).
    absent = f"medevac-absent-{uuid.uuid4().hex[:12]}"
    processes = tmp_path / "process_list.yaml"
    processes.write_text(
        yaml.safe_dump(
            [
                {
                    "process_name": f"/usr/local/bin/{absent}",
                    "start_command": "/bin/false",
                    "pre_start_command": None,
                    "post_start_command": None,
                    "restart_command": "/bin/false",
                    "pre_restart_command": None,
                    "post_restart_command": None,
                    "run_as_root": False,
                }
            ]
        )
    )
    config = tmp_path / "processmonitor.conf"
    log = tmp_path / "processmonitor.log"
    config.write_text(
        f"[DEFAULT]\nlog_file = {log}\ndebug = True\n"
        "[api]\nauth_type = admin_token\n"
        f"endpoint = {medevac.endpoint}\ntoken = {ADMIN_TOKEN}\n"
        "region = RegionOne\napi_interface = public\n"
        f"[process]\nprocess_list_path = {processes}\ncheck_interval = 1\n"
        "restart_retries = 1\nrestart_interval = 0\napi_retry_max = 0\napi_retry_interval = 0\n"
    )
    env = {"PATH": f"{LAB_BIN}:/usr/bin:/bin", "HOME": str(Path.home())}
    monitor = subprocess.Popen(
        [str(LAB_BIN / "masakari-processmonitor"), "--config-file", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def reported() -> dict[str, Any] | None:
        assert monitor.poll() is None, _tail(log)
        found = [
            n
            for n in medevac.api("notifications?type=PROCESS")["notifications"]
            if n["payload"].get("process_name") == absent
        ]
        return found[0] if found else None

    try:
        notice = wait_for("the process monitor's report", reported, timeout=60, interval=0.2)
    finally:
        monitor.terminate()
        try:
            monitor.wait(timeout=15)
        except subprocess.TimeoutExpired:
            monitor.kill()
            monitor.wait(timeout=15)
    assert notice["payload"] == {"event": "STOPPED", "process_name": absent}
    host = medevac.api(f"segments/{seg['uuid']}/hosts")["hosts"][0]
    assert (notice["source_host_uuid"], host["name"]) == (host["uuid"], ME)
    # Not nova-compute: medevac recovers nothing for it, and says so.
    assert notice["status"] == "ignored" and notice["message"], notice
    # One report: a process that failed to restart is not restarted nor reported again.
    again = medevac.api("notifications?type=PROCESS")["notifications"]
    assert [n["notification_uuid"] for n in again] == [notice["notification_uuid"]]
    text = log.read_text()
    assert f"Process '/usr/local/bin/{absent}' is not found." in text, text[-2000:]


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else "(no log)"


def _crm_mon(node: str, online: bool) -> str:
    """What `crm_mon -X` prints for a quorate cluster with one Pacemaker Remote node."""
    state = "true" if online else "false"
    return (
        '<crm_mon><summary><current_dc with_quorum="true"/></summary>'
        f'<nodes><node name="{node}" online="{state}" type="remote"/></nodes></crm_mon>\n'
    )


def _session_members(leader: int) -> list[int]:
    """The live processes of the session ``leader`` heads: it and what it started,
    however reparented (the privsep helper forks its daemon off and exits); zombies,
    dead already, are left out."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        # state, ppid, pgrp, then the session id
        if fields[0] != "Z" and int(fields[3]) == leader:
            members.append(int(entry.name))
    return members


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_masakari_hostmonitor_running_reports_a_remote_node_gone_offline(
    medevac: Served, tmp_path: Path
) -> None:
    """The `masakari-hostmonitor` service itself, unchanged, with its Pacemaker driver
    on a Pacemaker Remote node: it runs `crm_mon -X` as root through its privsep daemon
    (a stand-in `crm_mon` printing what the test writes), sees a node go from online to
    offline and reports it as Masakari expects."""
    assert LAB_BIN is not None
    # Without sudo the monitor's privsep daemon is root only if the monitor is (as here
    # and in CI); else its `crm_mon` would fail and nothing be reported.
    assert os.geteuid() == 0, "the host monitor runs its commands as root"
    node = "h2"  # a segment host other than this machine, which the monitor never reports
    seg = as_json(medevac, "segment", "create", "seg1", "auto", "COMPUTE")
    as_json(medevac, "segment", "host", "create", node, "COMPUTE", "SSH", seg["uuid"])
    state = tmp_path / "crm_mon.xml"
    state.write_text(_crm_mon(node, online=True))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    crm_mon = fake_bin / "crm_mon"
    crm_mon.write_text(f"#!/bin/sh\nexec cat {state}\n")
    crm_mon.chmod(0o755)
    config = tmp_path / "hostmonitor.conf"
    log = tmp_path / "hostmonitor.log"
    config.write_text(
        f"[DEFAULT]\nlog_file = {log}\ndebug = True\n"
        "[api]\nauth_type = admin_token\n"
        f"endpoint = {medevac.endpoint}\ntoken = {ADMIN_TOKEN}\n"
        "region = RegionOne\napi_interface = public\n"
        "[host]\nmonitoring_driver = default\nmonitoring_interval = 1\n"
        "pacemaker_node_type = remote\nrestrict_to_remotes = True\n"
        "disable_ipmi_check = True\napi_retry_max = 0\napi_retry_interval = 0\n"
        # Root already: the privsep daemon is started without sudo.
        f"[masakarimonitors_privileged]\nhelper_command = {LAB_BIN / 'privsep-helper'}\n"
    )
    # The privsep daemon inherits this environment, so it finds the stand-in first too.
    env = {"PATH": f"{fake_bin}:{LAB_BIN}:/usr/bin:/bin", "HOME": str(Path.home())}
    monitor = subprocess.Popen(
        [str(LAB_BIN / "masakari-hostmonitor"), "--config-file", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session, to find the daemon it spawns
    )

    def logged(line: str) -> Callable[[], bool]:
        def check() -> bool:
            assert monitor.poll() is None, _tail(log)
            return log.exists() and line in log.read_text()

        return check

    def reported() -> dict[str, Any] | None:
        assert monitor.poll() is None, _tail(log)
        found = medevac.api("notifications?type=COMPUTE_HOST")["notifications"]
        return found[0] if found else None

    daemons: list[int] = []
    try:
        seen = f"Recognized '{node}' as a new member of cluster. Host status is 'online'."
        wait_for("the host monitor to see the node online", logged(seen), timeout=60)
        daemons = [
            pid
            for pid in _session_members(monitor.pid)
            if pid != monitor.pid and "privsep-helper" in _cmdline(pid)
        ]
        assert daemons, "no privsep daemon in the host monitor's session"
        # Nothing is reported for a node first seen, nor while it stays as it was.
        wait_for(
            "a second look at the node",
            logged(f"'{node}' is 'online' (current: 'online')."),
            timeout=30,
        )
        assert medevac.api("notifications")["notifications"] == []
        fresh = state.with_suffix(".new")
        fresh.write_text(_crm_mon(node, online=False))
        fresh.replace(state)  # at once: crm_mon never prints half a file
        notice = wait_for("the host monitor's report", reported, timeout=60, interval=0.2)
    except AssertionError as failed:
        raise AssertionError(f"{failed}\n{_tail(log)}") from None
    finally:
        _stop_session(monitor)
    assert notice["payload"] == {
        "event": "STOPPED",
        "cluster_status": "OFFLINE",
        "host_status": "NORMAL",
    }
    host = medevac.api(f"segments/{seg['uuid']}/hosts")["hosts"][0]
    assert (notice["source_host_uuid"], host["name"]) == (host["uuid"], node)
    assert notice["status"] == "new"  # a suspicion, confirmed by medevac's own checks
    assert medevac.monitor.hosts[node].state in (HostState.SUSPECT, HostState.LOST)
    assert host["on_maintenance"] is True
    reports = medevac.api("notifications")["notifications"]
    assert [n["notification_uuid"] for n in reports] == [notice["notification_uuid"]]
    assert not set(daemons) & set(_session_members(monitor.pid))


def _stop_session(leader: subprocess.Popen[bytes]) -> None:
    """Stop a process started in a session of its own, and whatever it left in that
    session (a privsep daemon is no longer its child, but stays in its session)."""

    def exited() -> bool:  # not reaped yet: its id, the session's, cannot be reused
        if leader.returncode is not None:  # reaped already, having died on its own
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, leader.pid, flags) is not None

    leader.terminate()
    try:
        wait_for("the monitor to exit", exited, timeout=15, interval=0.1)
    except AssertionError:
        leader.kill()
        wait_for("the monitor to be killed", exited, timeout=15, interval=0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_members(leader.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            wait_for(
                "the monitor's session to end",
                lambda: not _session_members(leader.pid),
                timeout=10,
                interval=0.1,
            )
            break
        except AssertionError:
            if sig == signal.SIGKILL:
                raise
    leader.wait(timeout=15)

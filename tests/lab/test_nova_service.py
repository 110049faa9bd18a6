"""The lab's real Nova service: API, fault-injection control API, host loss and evacuation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.lab.conftest import LAB_BIN

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
LAB_PYTHON = LAB_BIN / "python"
SCRIPT = ROOT / "src" / "medevac" / "lab" / "services" / "nova_service.py"
SERVICE_DOWN_TIME = 5


@dataclass
class NovaLab:
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    log: Path
    api: httpx.Client
    control: httpx.Client

    def req(
        self, method: str, path: str, mv: str = "2.74", token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"compute {mv}"}
        if token:
            headers["X-Auth-Token"] = token
        return self.api.request(method, path, headers=headers, **kw)

    def server(self, sid: str, mv: str = "2.74", token: str | None = None) -> dict[str, Any]:
        r = self.req("GET", f"/servers/{sid}", mv=mv, token=token)
        assert r.status_code == 200, r.text
        return dict(r.json()["server"])

    def boot(self, name: str, host: str | None = None, token: str | None = None) -> str:
        body: dict[str, Any] = {
            "name": name,
            "imageRef": self.info["image_id"],
            "flavorRef": self.info["flavor_id"],
            "networks": "none",
        }
        if host:
            body["host"] = host
        r = self.req("POST", "/servers", json={"server": body}, token=token)
        assert r.status_code == 202, r.text
        return str(r.json()["server"]["id"])

    def wait_status(
        self, sid: str, status: str, timeout: float = 30, host: str | None = None
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            s = self.server(sid)
            assert s["status"] != "ERROR" or status == "ERROR", s.get("fault")
            if (
                s["status"] == status
                and s["OS-EXT-STS:task_state"] is None
                and (host is None or s["OS-EXT-SRV-ATTR:host"] == host)
            ):
                return s
            return None

        return wait_for(f"server {sid} {status}", check, timeout, interval=0.1)

    def ctl(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.control.request(method, path, **kw)

    def domains(self) -> dict[str, list[str]]:
        r = self.ctl("GET", "/domains")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def compute_service(self, host: str) -> dict[str, Any]:
        r = self.req(
            "GET", "/os-services", mv="2.53", params={"host": host, "binary": "nova-compute"}
        )
        assert r.status_code == 200, r.text
        (svc,) = r.json()["services"]
        return dict(svc)


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return None
    return proc.returncode


@pytest.fixture(scope="module")
def nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NovaLab]:
    if not LAB_PYTHON.exists():
        pytest.fail(f"lab venv missing: {LAB_PYTHON}")
    tmp = tmp_path_factory.mktemp("nova")
    ready = tmp / "ready.json"
    log = tmp / "nova.log"
    proc = subprocess.Popen(
        [
            str(LAB_PYTHON),
            str(SCRIPT),
            "--hosts",
            "host1,host2",
            "--report-interval",
            "1",
            "--service-down-time",
            str(SERVICE_DOWN_TIME),
            "--ready-file",
            str(ready),
            "--log-file",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def is_ready() -> bool:
            assert proc.poll() is None, f"nova service died:\n{log.read_text()[-3000:]}"
            return ready.exists()

        wait_for("nova service ready", is_ready, 60, interval=0.05)
        info = json.loads(ready.read_text())
        base = info["api_url"]
        with (
            httpx.Client(base_url=base, timeout=60) as api,
            httpx.Client(base_url=info["control_url"], timeout=60) as control,
        ):
            yield NovaLab(proc, info, log, api, control)
    finally:
        _stop(proc)


def test_ready_file_and_discovery(nova: NovaLab) -> None:
    assert nova.info["pid"] == nova.proc.pid
    assert nova.info["api_url"].startswith("http://127.0.0.1:")
    assert nova.info["api_url"].endswith("/v2.1")
    assert nova.info["control_url"].startswith("http://127.0.0.1:")
    root = nova.info["api_url"].rsplit("/v2.1", 1)[0]
    versions = httpx.get(root + "/").json()["versions"]
    assert any(v["id"] == "v2.1" and v["status"] == "CURRENT" for v in versions)
    version = nova.api.get("").json()["version"]
    assert version["id"] == "v2.1" and version["min_version"] == "2.1"
    assert nova.ctl("GET", "/healthz").json() == {"ok": True}
    hosts = nova.ctl("GET", "/hosts").json()["hosts"]
    assert hosts == {
        h: {"compute_running": True, "domains_alive": True} for h in ("host1", "host2")
    }


def test_control_api_errors(nova: NovaLab) -> None:
    r = nova.ctl("POST", "/hosts/nohost/stop", json={"domains": "destroy"})
    assert r.status_code == 404 and "error" in r.json()
    r = nova.ctl("POST", f"/servers/{'0' * 8}-0000-0000-0000-{'0' * 12}/crash")
    assert r.status_code == 404 and "error" in r.json()
    r = nova.ctl("POST", "/hosts/host1/stop", content=b"{not json")
    assert r.status_code == 400 and "error" in r.json()
    r = nova.ctl("POST", "/hosts/host1/stop", json={"domains": "maybe"})
    assert r.status_code == 400
    assert nova.ctl("GET", "/nothing").status_code == 404
    assert nova.ctl("GET", "/hosts").json()["hosts"]["host1"]["compute_running"] is True


def test_project_token_sees_host_status_of_its_own_server(nova: NovaLab) -> None:
    token = "lab-project-p1"
    sid = nova.boot("tenant-vm", token=token)
    nova.wait_status(sid, "ACTIVE")
    mine = nova.server(sid, mv="2.16", token=token)
    assert mine["tenant_id"] == "p1"
    assert mine["host_status"] == "UP"
    assert "OS-EXT-SRV-ATTR:host" not in mine  # still not an admin
    other = nova.req("GET", f"/servers/{sid}", mv="2.16", token="lab-project-p2")
    assert other.status_code == 404
    assert nova.req("GET", "/os-services", token=token).status_code == 403
    nova.req("DELETE", f"/servers/{sid}", token=token)


def test_crash_and_heal_are_seen_by_nova(nova: NovaLab) -> None:
    sid = nova.boot("crashy", host="host2")
    nova.wait_status(sid, "ACTIVE")
    assert sid in nova.domains()["host2"]

    r = nova.ctl("POST", f"/servers/{sid}/crash")
    assert r.status_code == 200, r.text
    assert r.json()["synced"] is True
    stopped = nova.wait_status(sid, "SHUTOFF")
    assert stopped["OS-EXT-STS:power_state"] in (4, 6)
    assert sid not in nova.domains()["host2"]

    r = nova.ctl("POST", f"/servers/{sid}/heal")
    assert r.status_code == 200, r.text
    healed = nova.wait_status(sid, "ACTIVE")
    assert healed["OS-EXT-STS:power_state"] == 1
    assert sid in nova.domains()["host2"]
    nova.req("DELETE", f"/servers/{sid}")


def test_host_loss_evacuation_and_return(nova: NovaLab) -> None:
    s1 = nova.boot("vm1", host="host1")
    s2 = nova.boot("vm2", host="host1")
    s3 = nova.boot("vm3", host="host2")
    for sid, host in ((s1, "host1"), (s2, "host1"), (s3, "host2")):
        nova.wait_status(sid, "ACTIVE", host=host)
    doms = nova.domains()
    assert {s1, s2} <= set(doms["host1"]) and s3 in doms["host2"]

    # Nova refuses to evacuate from a host whose compute service is up.
    r = nova.req("POST", f"/servers/{s1}/action", mv="2.68", json={"evacuate": {}})
    assert r.status_code == 400 and "is still in use" in r.text

    # The host dies: its compute stops and its domains stop running.
    t_stop = time.monotonic()
    r = nova.ctl("POST", "/hosts/host1/stop", json={"domains": "destroy"})
    assert r.status_code == 200, r.text
    assert nova.domains()["host1"] == []
    assert nova.ctl("GET", "/hosts").json()["hosts"]["host1"] == {
        "compute_running": False,
        "domains_alive": False,
    }

    svc = wait_for(
        "host1 compute down",
        lambda: (s := nova.compute_service("host1"))["state"] == "down" and s,
        SERVICE_DOWN_TIME + 10,
        interval=0.2,
    )
    assert time.monotonic() - t_stop >= SERVICE_DOWN_TIME - 1.5  # natural heartbeat loss
    assert svc["forced_down"] is False
    assert nova.server(s1, mv="2.16")["host_status"] == "UNKNOWN"
    assert nova.compute_service("host2")["state"] == "up"

    # Fence confirmed: force the service down, then evacuate.
    r = nova.req("PUT", f"/os-services/{svc['id']}", mv="2.53", json={"forced_down": True})
    assert r.status_code == 200, r.text
    assert nova.server(s1, mv="2.16")["host_status"] == "DOWN"
    for sid in (s1, s2):
        r = nova.req("POST", f"/servers/{sid}/action", mv="2.68", json={"evacuate": {}})
        assert r.status_code == 200, r.text
    for sid in (s1, s2):
        nova.wait_status(sid, "ACTIVE", host="host2")
    doms = nova.domains()
    assert {s1, s2, s3} <= set(doms["host2"])
    assert not {s1, s2} & set(doms["host1"])

    # The host comes back: Nova's init_host deletes the evacuated guests.
    r = nova.ctl("POST", "/hosts/host1/start", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"host": "host1", "compute_running": True, "domains_alive": False}
    assert not {s1, s2} & set(nova.ctl("GET", "/domains/all").json()["host1"])
    assert nova.domains()["host1"] == []
    r = nova.req("PUT", f"/os-services/{svc['id']}", mv="2.53", json={"forced_down": False})
    assert r.status_code == 200, r.text
    wait_for("host1 compute up", lambda: nova.compute_service("host1")["state"] == "up", 10)
    running = nova.domains()
    seen = [sid for host in running for sid in running[host]]
    assert len(seen) == len(set(seen)), f"a server runs on two hosts: {running}"
    assert nova.ctl("POST", "/hosts/host1/start", json={}).status_code == 409


def test_keep_leaves_domains_running(nova: NovaLab) -> None:
    sid = nova.boot("keeper", host="host2")
    nova.wait_status(sid, "ACTIVE")
    r = nova.ctl("POST", "/hosts/host2/stop", json={"domains": "keep"})
    assert r.status_code == 200, r.text
    assert r.json()["domains_alive"] is True
    assert sid in nova.domains()["host2"]
    r = nova.ctl("POST", "/hosts/host2/start", json={})
    assert r.status_code == 200, r.text
    assert sid in nova.domains()["host2"]
    assert nova.wait_status(sid, "ACTIVE")["OS-EXT-STS:power_state"] == 1


def test_sigterm_exits_cleanly(nova: NovaLab) -> None:
    start = time.monotonic()
    rc = _stop(nova.proc)
    assert rc == 0
    assert time.monotonic() - start < 10
    assert not os.path.exists(f"/proc/{nova.proc.pid}/status") or nova.proc.poll() is not None

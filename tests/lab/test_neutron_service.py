"""The lab's real Neutron service: HTTP contract, data_plane_status, policy, SDK and CLI."""

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

from tests.lab.conftest import LAB_BIN

REPO = Path(__file__).resolve().parents[2]
LAB_PYTHON = LAB_BIN / "python"
OPENSTACK_CLI = LAB_BIN / "openstack"
SCRIPT = REPO / "src" / "medevac" / "lab" / "services" / "neutron_service.py"

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not LAB_PYTHON.exists(), reason="lab venv (.venv-lab) not installed"),
]

READY_TIMEOUT = 60.0
PROJECT = "0b5c1f5e6a7d4e2f9a1b2c3d4e5f6a7b"
OTHER_PROJECT = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@dataclass
class Neutron:
    proc: subprocess.Popen[bytes]
    url: str
    ready: dict[str, Any]
    log: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"X-Auth-Token": token} if token else {}
        return httpx.Client(base_url=f"{self.url}/v2.0", headers=headers, timeout=30.0)

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""


def _start(tmp: Path, *extra: str) -> Neutron:
    tmp.mkdir(parents=True, exist_ok=True)
    ready_file = tmp / "ready.json"
    log = tmp / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                str(LAB_PYTHON),
                str(SCRIPT),
                "--physnets",
                "physnet1,physnet2",
                "--ready-file",
                str(ready_file),
                "--log-file",
                str(tmp / "neutron.log"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp,
        )
    return Neutron(proc=proc, url="", ready={}, log=log)


def _wait_ready(n: Neutron, ready_file: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if n.proc.poll() is not None:
            raise RuntimeError(f"neutron exited with {n.proc.returncode}:\n{n.log_tail()}")
        if ready_file.exists():
            n.ready = json.loads(ready_file.read_text())
            n.url = n.ready["url"]
            return
        time.sleep(0.05)
    raise TimeoutError(f"neutron not ready after {READY_TIMEOUT}s:\n{n.log_tail()}")


def _stop(n: Neutron) -> None:
    if n.proc.poll() is None:
        n.proc.terminate()
        try:
            n.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Neutron, Neutron]]:
    """Stock Neutron, and one started with --fix-data-plane-status-unset (started together)."""
    base = tmp_path_factory.mktemp("neutron")
    stock = _start(base / "stock")
    fixed = _start(base / "fixed", "--fix-data-plane-status-unset")
    try:
        _wait_ready(stock, base / "stock" / "ready.json")
        _wait_ready(fixed, base / "fixed" / "ready.json")
        yield stock, fixed
    finally:
        _stop(stock)
        _stop(fixed)


@pytest.fixture(scope="module")
def neutron(servers: tuple[Neutron, Neutron]) -> Neutron:
    return servers[0]


def _create_network(c: httpx.Client, physnet: str, project: str = PROJECT) -> dict[str, Any]:
    r = c.post(
        "/networks",
        json={
            "network": {
                "name": f"net-{physnet}",
                "provider:network_type": "flat",
                "provider:physical_network": physnet,
                "project_id": project,
            }
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["network"]


def _create_port(
    c: httpx.Client, net_id: str, host: str, device: str, project: str = PROJECT
) -> dict[str, Any]:
    r = c.post(
        "/ports",
        json={
            "port": {
                "network_id": net_id,
                "device_id": device,
                "device_owner": "compute:nova",
                "binding:host_id": host,
                "project_id": project,
            }
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["port"]


def _set_dps(c: httpx.Client, port_id: str, value: str | None) -> httpx.Response:
    return c.put(f"/ports/{port_id}", json={"port": {"data_plane_status": value}})


@pytest.fixture(scope="module")
def topology(neutron: Neutron) -> dict[str, Any]:
    """A flat physnet1 network and 3 ports: 2 bound to host-a, 1 to host-b."""
    with neutron.client() as c:
        net = _create_network(c, "physnet1")
        ports = {
            "a1": _create_port(c, net["id"], "host-a", "vm-a1"),
            "a2": _create_port(c, net["id"], "host-a", "vm-a2"),
            "b1": _create_port(c, net["id"], "host-b", "vm-b1"),
        }
    return {"network": net, "ports": ports}


def test_ready_file_and_versions_document(neutron: Neutron) -> None:
    assert neutron.ready["pid"] == neutron.proc.pid
    assert neutron.url.startswith("http://127.0.0.1:")
    r = httpx.get(neutron.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.json() == {
        "versions": [
            {
                "id": "v2.0",
                "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{neutron.url}/v2.0/"}],
            }
        ]
    }
    assert httpx.get(neutron.url + "/nope", timeout=10).status_code == 404


def test_sdk_discovery_lists_extensions(neutron: Neutron) -> None:
    import openstack

    conn = openstack.connect(auth_type="none", network_endpoint_override=neutron.url)
    try:
        aliases = {e.alias for e in conn.network.extensions()}
    finally:
        conn.close()
    assert {"data-plane-status", "binding", "provider"} <= aliases


def test_provider_network_and_bound_ports(neutron: Neutron, topology: dict[str, Any]) -> None:
    net, ports = topology["network"], topology["ports"]
    assert net["provider:network_type"] == "flat"
    assert net["provider:physical_network"] == "physnet1"
    a1 = ports["a1"]
    assert a1["project_id"] == PROJECT
    assert a1["binding:host_id"] == "host-a"
    assert a1["binding:vif_type"] == "ovs"
    assert a1["data_plane_status"] is None
    with neutron.client() as c:
        by_host = {
            h: {p["id"] for p in c.get("/ports", params={"binding:host_id": h}).json()["ports"]}
            for h in ("host-a", "host-b", "host-c")
        }
        assert by_host == {
            "host-a": {ports["a1"]["id"], ports["a2"]["id"]},
            "host-b": {ports["b1"]["id"]},
            "host-c": set(),
        }
        by_dev = c.get("/ports", params={"device_id": "vm-b1"}).json()["ports"]
        assert [p["id"] for p in by_dev] == [ports["b1"]["id"]]
        # The physnet of a port, via its network.
        port_net = c.get(f"/networks/{by_dev[0]['network_id']}").json()["network"]
        assert port_net["provider:physical_network"] == "physnet1"
        # The same physnet cannot carry two flat networks: real ML2 validation.
        r = c.post(
            "/networks",
            json={
                "network": {
                    "name": "dup",
                    "provider:network_type": "flat",
                    "provider:physical_network": "physnet1",
                }
            },
        )
        assert r.status_code == 409
        assert "NeutronError" in r.json()


def test_set_data_plane_status_down_and_active(neutron: Neutron, topology: dict[str, Any]) -> None:
    pid = topology["ports"]["a2"]["id"]
    with neutron.client() as c:
        r = _set_dps(c, pid, "DOWN")
        assert r.status_code == 200, r.text
        assert r.json()["port"]["data_plane_status"] == "DOWN"
        assert c.get(f"/ports/{pid}").json()["port"]["data_plane_status"] == "DOWN"
        assert _set_dps(c, pid, "ACTIVE").status_code == 200
        assert c.get(f"/ports/{pid}").json()["port"]["data_plane_status"] == "ACTIVE"
        r = _set_dps(c, pid, "BROKEN")
        assert r.status_code == 400
        assert r.json()["NeutronError"]["type"] == "HTTPBadRequest"


def test_unset_fails_on_stock_neutron(neutron: Neutron, topology: dict[str, Any]) -> None:
    """Neutron 29 accepts null in the API, then fails it in its object layer: 500."""
    pid = topology["ports"]["b1"]["id"]
    with neutron.client() as c:
        assert _set_dps(c, pid, "DOWN").status_code == 200
        r = _set_dps(c, pid, None)
        assert r.status_code == 500
        assert r.json()["NeutronError"]["type"] == "HTTPInternalServerError"
        assert c.get(f"/ports/{pid}").json()["port"]["data_plane_status"] == "DOWN"


def test_unset_with_fix_flag(servers: tuple[Neutron, Neutron]) -> None:
    fixed = servers[1]
    with fixed.client() as c:
        net = _create_network(c, "physnet2")
        pid = _create_port(c, net["id"], "host-a", "vm-x")["id"]
        assert _set_dps(c, pid, None).status_code == 200  # no status yet
        assert _set_dps(c, pid, "DOWN").status_code == 200
        r = _set_dps(c, pid, None)
        assert r.status_code == 200, r.text
        assert r.json()["port"]["data_plane_status"] is None
        assert c.get(f"/ports/{pid}").json()["port"]["data_plane_status"] is None


def test_project_token_reads_but_cannot_set(neutron: Neutron, topology: dict[str, Any]) -> None:
    ports = topology["ports"]
    pid = ports["a1"]["id"]
    with neutron.client() as admin:
        assert _set_dps(admin, pid, "DOWN").status_code == 200
    with neutron.client(f"lab-project-{PROJECT}-user-alice") as member:
        r = member.get(f"/ports/{pid}")
        assert r.status_code == 200
        assert r.json()["port"]["data_plane_status"] == "DOWN"
        r = _set_dps(member, pid, "ACTIVE")
        assert r.status_code in (403, 404)
        assert r.json()["NeutronError"]["type"] == "PolicyNotAuthorized"
        # A field the owner may change is still writable.
        assert member.put(f"/ports/{pid}", json={"port": {"name": "mine"}}).status_code == 200
        mine = {p["id"] for p in member.get("/ports").json()["ports"]}
        assert mine == {p["id"] for p in ports.values()}
    with neutron.client(f"lab-project-{OTHER_PROJECT}") as other:
        r = other.get(f"/ports/{pid}")
        assert r.status_code == 404
        assert r.json()["NeutronError"]["type"] == "PortNotFound"
        assert other.get("/ports").json()["ports"] == []
    with neutron.client() as admin:
        assert admin.get(f"/ports/{pid}").json()["port"]["data_plane_status"] == "DOWN"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [str(OPENSTACK_CLI), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, f"openstack {' '.join(args)}: {r.stderr}"
    return r


def test_openstack_cli(neutron: Neutron, topology: dict[str, Any], tmp_path: Path) -> None:
    pid = topology["ports"]["b1"]["id"]
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  lab-neutron:\n"
        "    auth_type: none\n"
        f"    network_endpoint_override: {neutron.url}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    _cli(["--os-cloud", "lab-neutron", "port", "set", "--data-plane-status", "ACTIVE", pid], env)
    shown = json.loads(
        _cli(["--os-cloud", "lab-neutron", "port", "show", pid, "-f", "json"], env).stdout
    )
    assert shown["data_plane_status"] == "ACTIVE"
    assert shown["binding_host_id"] == "host-b"
    # Without a clouds.yaml: auth none with the endpoint given on the command line.
    _cli(
        [
            "--os-auth-type",
            "none",
            "--os-endpoint",
            neutron.url,
            "port",
            "set",
            "--data-plane-status",
            "DOWN",
            pid,
        ],
        env,
    )
    with neutron.client() as c:
        assert c.get(f"/ports/{pid}").json()["port"]["data_plane_status"] == "DOWN"


def test_sigterm_exits_zero(servers: tuple[Neutron, Neutron]) -> None:
    fixed = servers[1]
    assert fixed.proc.poll() is None
    t0 = time.monotonic()
    fixed.proc.send_signal(signal.SIGTERM)
    assert fixed.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5

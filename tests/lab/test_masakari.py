"""Masakari's API driving medevac's own pipeline on the lab: a segment created through
the API sends a crashed host's servers to its reserved host; the crash, reported by a
COMPUTE_HOST notification, is confirmed by medevac, fenced through the host's BMC and
recovered through the real Nova; the notification's status, progress and VM moves
follow the recovery's records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.lab.conftest import Controller, RunningLab, start_lab

STOPPED = {"event": "STOPPED", "host_status": "UNKNOWN", "cluster_status": "OFFLINE"}


@pytest.fixture(scope="module")
def mlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("masakari-lab"), hosts=3, servers_per_host=3)


@pytest.fixture(scope="module")
def ctl(mlab: RunningLab) -> Iterator[Controller]:
    controller = Controller.start(mlab, MEDEVAC_RECOVERY__CHECK_INTERVAL="0.25")
    try:
        yield controller
    finally:
        if controller.proc.poll() is None:
            controller.stop()


def api(ctl: Controller, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(
        method,
        f"{ctl.url}/instance-ha/v1{path}",
        json=body,
        headers={"X-Auth-Token": ctl.token, "OpenStack-API-Version": "instance-ha 1.3"},
        timeout=30,
    )
    assert r.status_code < 300, r.text
    return r.json()


def test_a_host_notification_is_confirmed_fenced_and_recovered_to_the_reserved_host(
    mlab: RunningLab, ctl: Controller
) -> None:
    segment = {"name": "rack", "recovery_method": "reserved_host", "service_type": "COMPUTE"}
    seg = api(ctl, "POST", "/segments", {"segment": segment})["segment"]
    for name, reserved in (("host1", False), ("host3", True)):
        host = {"name": name, "type": "COMPUTE", "control_attributes": "IPMI", "reserved": reserved}
        api(ctl, "POST", f"/segments/{seg['uuid']}/hosts", {"host": host})
    ha = {s["id"] for s in mlab.servers_on("host1") if s["metadata"].get("HA_Enabled") == "True"}
    assert ha, "the lab gives host1 an HA server"

    mlab.client.inject("host-crash", "host1")
    body = {
        "type": "COMPUTE_HOST",
        "hostname": "host1",
        "generated_time": "2026-01-01T00:00:00",
        "payload": STOPPED,
    }
    n = api(ctl, "POST", "/notifications", {"notification": body})["notification"]
    assert n["status"] == "new", n["message"]  # taken as a suspicion, whatever its host_status
    show = f"/notifications/{n['notification_uuid']}"

    def ended() -> dict[str, Any] | None:
        found = api(ctl, "GET", show)["notification"]
        return found if found["status"] in ("finished", "failed", "ignored", "error") else None

    done = wait_for("the notification's recovery to end", ended, 120, 0.5)
    assert done["status"] == "finished", done
    names = [d["name"] for d in done["recovery_workflow_details"]]
    assert names[0] == "medevac:incident" and "medevac:recover" in names
    assert mlab.host("host1")["bmc"]["power"] == "off"  # fenced through its BMC
    moves = api(ctl, "GET", f"{show}/vmoves")["vmoves"]
    assert {m["instance_uuid"] for m in moves} == ha
    assert {(m["status"], m["source_host"], m["dest_host"]) for m in moves} == {
        ("succeeded", "host1", "host3")  # the segment's reserved host, not the scheduler's
    }
    placed = {s["id"]: s["host"] for s in mlab.status()["servers"]}
    assert {placed[i] for i in ha} == {"host3"}
    hosts = api(ctl, "GET", f"/segments/{seg['uuid']}/hosts?name=host1")["hosts"]
    assert hosts[0]["on_maintenance"] is True  # as Masakari leaves a host it recovered

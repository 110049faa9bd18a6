"""Masakari's API v1 under /instance-ha over HTTP, on SQLite and PostgreSQL: discovery,
microversions, segments, hosts, notifications into the monitor, their status and vmoves
derived from the incident and recovery records, Masakari's errors and its 409 rules,
who may do what; and the recovery's host groups seeing an edit at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from medevac.api import create_app
from medevac.config import Settings
from medevac.monitor.hosts import HostMonitor, HostState
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode, host_key
from medevac.recovery.groups import stored_groups
from medevac.recovery.policy import HostGroup, RecoveryMethod
from medevac.storage import Database
from medevac.storage.records import IncidentStore, RecoveryStore
from medevac.storage.segments import Conflict, SegmentStore
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN
from tests.monitor_fakes import KEY, PowerOn, Sink

pytestmark = pytest.mark.databases

ROOT = "/instance-ha"
V1 = f"{ROOT}/v1"
PROJECT = "0123abcd-ef45"
HOSTS = ("h1", "h2", "h3")
SERVER = "0a6c6e35-1111-4c2d-9a57-0123456789ab"


def headers(token: str = ADMIN_TOKEN, version: str | None = "1.3") -> dict[str, str]:
    out = {"X-Auth-Token": token}
    if version is not None:
        out["OpenStack-API-Version"] = f"instance-ha {version}"
    return out


ADMIN = headers()


class Nova:
    """Nova's compute services: the hosts a segment may hold."""

    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {h: {"state": "up"} for h in HOSTS}


@dataclass
class World:
    client: TestClient
    monitor: HostMonitor
    sink: Sink
    db: Database

    def heartbeat(self, host: str, checks: Checks, seq: int = 1) -> None:
        d = Datagram(DatagramKind.HEARTBEAT, host, seq, b"b" * 16, time.time(), checks)
        self.monitor.datagram_received(encode(d, host_key(KEY, host)), ("127.0.0.1", 9))


@pytest.fixture
def world(settings: Settings, db: Database) -> Iterator[World]:
    sink = Sink()
    monitor = HostMonitor(dict.fromkeys(HOSTS, "z"), KEY, sink, PowerOn(), Nova())
    app = create_app(settings, db, monitor=monitor)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(client, monitor, sink, db)


def new_segment(w: World, name: str = "seg1", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "recovery_method": "auto", "service_type": "COMPUTE", **extra}
    r = w.client.post(f"{V1}/segments", json={"segment": body}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return dict(r.json()["segment"])


def new_host(w: World, segment: str, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "type": "COMPUTE", "control_attributes": "SSH", **extra}
    r = w.client.post(f"{V1}/segments/{segment}/hosts", json={"host": body}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return dict(r.json()["host"])


def notify(w: World, type_: str, host: str, payload: dict[str, str], **kw: Any) -> Any:
    body = {
        "type": type_,
        "hostname": host,
        "generated_time": kw.get("at", datetime.now(UTC).replace(tzinfo=None).isoformat()),
        "payload": payload,
    }
    return w.client.post(f"{V1}/notifications", json={"notification": body}, headers=ADMIN)


STOPPED = {"event": "STOPPED", "host_status": "NORMAL", "cluster_status": "OFFLINE"}


def fault(r: Any, status: int, name: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == [name], body
    assert body[name]["code"] == status
    return str(body[name]["message"])


# -- discovery and microversions ------------------------------------------------------


def test_versions_are_open_and_link_below_the_mount(world: World) -> None:
    r = world.client.get(f"{ROOT}/")
    assert r.status_code == 200
    (version,) = r.json()["versions"]
    assert (version["id"], version["version"], version["min_version"]) == ("v1.0", "1.3", "1.0")
    assert version["links"][0]["href"] == "http://testserver/instance-ha/v1/"
    for path in (V1, f"{V1}/"):
        r = world.client.get(path)
        assert r.status_code == 200
        assert r.json()["version"]["links"][0]["href"] == "http://testserver/instance-ha/v1/"


def test_the_version_is_echoed_and_out_of_range_is_406(world: World) -> None:
    r = world.client.get(f"{V1}/segments", headers=headers(version=None))
    assert r.headers["OpenStack-API-Version"] == "instance-ha 1.0"
    assert r.headers["Vary"] == "OpenStack-API-Version"
    r = world.client.get(f"{V1}/segments", headers=headers(version="latest"))
    assert r.headers["OpenStack-API-Version"] == "instance-ha 1.3"
    message = fault(
        world.client.get(f"{V1}/segments", headers=headers(version="1.4")), 406, "masakariFault"
    )
    assert "maximum is 1.3" in message
    fault(world.client.get(f"{V1}/segments", headers=headers(version="one")), 400, "badRequest")


# -- segments -------------------------------------------------------------------------


def test_segments_crud_at_both_paths(world: World) -> None:
    seg = new_segment(world, description="rack 1")
    assert seg["enabled"] is True and isinstance(seg["id"], int)
    for base in (V1, f"{V1}/{PROJECT}"):
        r = world.client.get(f"{base}/segments/{seg['uuid']}", headers=ADMIN)
        assert r.status_code == 200 and r.json()["segment"]["description"] == "rack 1"
    r = world.client.put(
        f"{V1}/{PROJECT}/segments/{seg['uuid']}",
        json={"segment": {"recovery_method": "reserved_host", "enabled": False}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["segment"]["recovery_method"], r.json()["segment"]["enabled"]) == (
        "reserved_host",
        False,
    )
    assert r.json()["segment"]["updated_at"] is not None
    r = world.client.delete(f"{V1}/segments/{seg['uuid']}", headers=ADMIN)
    assert r.status_code == 204 and r.content == b""
    fault(world.client.get(f"{V1}/segments/{seg['uuid']}", headers=ADMIN), 404, "itemNotFound")
    # Masakari's project ids are hex with dashes: anything else is no route.
    fault(world.client.get(f"{V1}/not_a_project/segments", headers=ADMIN), 404, "itemNotFound")


def test_enabled_needs_microversion_1_2(world: World) -> None:
    body = {
        "segment": {"name": "s", "recovery_method": "auto", "service_type": "C", "enabled": False}
    }
    r = world.client.post(f"{V1}/segments", json=body, headers=headers(version="1.1"))
    assert "enabled" in fault(r, 400, "badRequest")
    r = world.client.post(f"{V1}/segments", json=body, headers=headers(version="1.2"))
    assert r.status_code == 201 and r.json()["segment"]["enabled"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"segment": {"name": "s", "recovery_method": "nearest", "service_type": "COMPUTE"}},
        {"segment": {"name": "", "recovery_method": "auto", "service_type": "COMPUTE"}},
        {"segment": {"recovery_method": "auto", "service_type": "COMPUTE"}},
        {"segment": {"name": "s", "recovery_method": "auto", "service_type": "C", "x": 1}},
        {"name": "s", "recovery_method": "auto", "service_type": "COMPUTE"},
        ["segment"],
    ],
)
def test_malformed_segments_are_400_and_nothing_is_stored(world: World, body: Any) -> None:
    fault(world.client.post(f"{V1}/segments", json=body, headers=ADMIN), 400, "badRequest")
    assert world.client.get(f"{V1}/segments", headers=ADMIN).json()["segments"] == []


def test_a_body_that_is_not_json_is_400(world: World) -> None:
    r = world.client.post(
        f"{V1}/segments",
        content=b"{not json",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert fault(r, 400, "badRequest") == "Malformed request body"


def test_segment_names_are_unique(world: World) -> None:
    new_segment(world, "a")
    b = new_segment(world, "b")
    r = world.client.post(
        f"{V1}/segments",
        json={"segment": {"name": "a", "recovery_method": "auto", "service_type": "C"}},
        headers=ADMIN,
    )
    assert "already exists" in fault(r, 409, "conflictingRequest")
    r = world.client.put(
        f"{V1}/segments/{b['uuid']}", json={"segment": {"name": "a"}}, headers=ADMIN
    )
    fault(r, 409, "conflictingRequest")


@pytest.mark.parametrize(
    "change",
    [{"name": None}, {"enabled": None}, {"recovery_method": None}, {"service_type": None}],
)
def test_a_segment_update_with_a_null_is_400_and_changes_nothing(
    world: World, change: dict[str, Any]
) -> None:
    """Only the description may be null (Masakari's schemas): a null elsewhere is a bad
    request, never a name clash or a NULL stored."""
    seg = new_segment(world, description="rack 1")
    url = f"{V1}/segments/{seg['uuid']}"
    r = world.client.put(url, json={"segment": change}, headers=ADMIN)
    assert next(iter(change)) in fault(r, 400, "badRequest")
    assert world.client.get(url, headers=ADMIN).json()["segment"] == seg
    r = world.client.put(url, json={"segment": {"description": None}}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["segment"]["description"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"name": None},
        {"type": None},
        {"control_attributes": None},
        {"reserved": None},
        {"on_maintenance": None},
    ],
)
def test_a_host_update_with_a_null_is_400_and_changes_nothing(
    world: World, change: dict[str, Any]
) -> None:
    seg = new_segment(world)
    host = new_host(world, seg["uuid"], "h1")
    url = f"{V1}/segments/{seg['uuid']}/hosts/{host['uuid']}"
    r = world.client.put(url, json={"host": change}, headers=ADMIN)
    assert next(iter(change)) in fault(r, 400, "badRequest")
    assert world.client.get(url, headers=ADMIN).json()["host"] == host


def test_only_a_name_taken_is_a_conflict_in_the_store(world: World) -> None:
    """Another rule broken (a NULL where none may be) is no name clash: it is raised as
    the database said it."""
    store = SegmentStore(world.db)
    at = datetime.now(UTC)
    a = store.add_segment(
        name="a", description=None, recovery_method="auto", service_type="C", enabled=True, at=at
    )
    store.add_segment(
        name="b", description=None, recovery_method="auto", service_type="C", enabled=True, at=at
    )
    with pytest.raises(Conflict):
        store.update_segment(a.uuid, {"name": "b"}, at)
    for broken in ({"name": None}, {"enabled": None}):
        with pytest.raises(IntegrityError):
            store.update_segment(a.uuid, broken, at)
    assert store.segment(a.uuid) == a


def test_segment_lists_page_by_integer_marker_sort_and_filter(world: World) -> None:
    ids = [new_segment(world, n, recovery_method=m)["id"] for n, m in
           [("c", "auto"), ("a", "rh_priority"), ("b", "auto")]]  # fmt: skip

    def names(query: str) -> list[str]:
        r = world.client.get(f"{V1}/segments?{query}", headers=ADMIN)
        assert r.status_code == 200, r.text
        return [s["name"] for s in r.json()["segments"]]

    assert names("") == ["b", "a", "c"]  # created_at desc
    assert names("sort_key=name&sort_dir=asc&limit=2") == ["a", "b"]
    assert names(f"sort_key=name&sort_dir=asc&marker={ids[2]}") == ["c"]
    assert names("recovery_method=auto&sort_key=name&sort_dir=asc") == ["b", "c"]
    assert names("enabled=false") == []
    bad = ["marker=999", "marker=x", "sort_key=password", "sort_dir=sideways", "limit=-1",
           "enabled=perhaps"]  # fmt: skip
    for query in bad:
        fault(world.client.get(f"{V1}/segments?{query}", headers=ADMIN), 400, "badRequest")


# -- hosts ----------------------------------------------------------------------------


def test_hosts_of_a_segment(world: World) -> None:
    seg = new_segment(world)
    h1 = new_host(world, seg["uuid"], "h1", reserved="True")
    assert (h1["reserved"], h1["on_maintenance"], h1["failover_segment_id"]) == (
        True,
        False,
        seg["uuid"],
    )
    assert h1["failover_segment"]["uuid"] == seg["uuid"]
    new_host(world, seg["uuid"], "h2")
    base = f"{V1}/{PROJECT}/segments/{seg['uuid']}/hosts"
    r = world.client.get(f"{base}?reserved=False&sort_key=name&sort_dir=asc", headers=ADMIN)
    assert [h["name"] for h in r.json()["hosts"]] == ["h2"]
    r = world.client.put(
        f"{base}/{h1['uuid']}", json={"host": {"on_maintenance": True}}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["host"]["on_maintenance"] is True
    r = world.client.get(f"{base}?on_maintenance=yes", headers=ADMIN)
    assert [h["name"] for h in r.json()["hosts"]] == ["h1"]
    fault(world.client.get(f"{base}?reserved=2", headers=ADMIN), 400, "badRequest")
    assert world.client.delete(f"{base}/{h1['uuid']}", headers=ADMIN).status_code == 204
    fault(world.client.get(f"{base}/{h1['uuid']}", headers=ADMIN), 404, "itemNotFound")


def test_a_host_must_be_novas_and_in_one_segment_only(world: World) -> None:
    seg = new_segment(world)
    other = new_segment(world, "seg2")
    body = {"host": {"name": "nowhere", "type": "COMPUTE", "control_attributes": "SSH"}}
    r = world.client.post(f"{V1}/segments/{seg['uuid']}/hosts", json=body, headers=ADMIN)
    assert "nowhere" in fault(r, 400, "badRequest")
    new_host(world, seg["uuid"], "h1")
    body = {"host": {"name": "h1", "type": "COMPUTE", "control_attributes": "SSH"}}
    r = world.client.post(f"{V1}/segments/{other['uuid']}/hosts", json=body, headers=ADMIN)
    fault(r, 409, "conflictingRequest")
    r = world.client.post(f"{V1}/segments/not-a-segment/hosts", json=body, headers=ADMIN)
    fault(r, 404, "itemNotFound")
    body = {"host": {"name": "h2", "type": "COMPUTE_HOST", "control_attributes": "SSH"}}
    r = world.client.post(f"{V1}/segments/{seg['uuid']}/hosts", json=body, headers=ADMIN)
    fault(r, 400, "badRequest")


# -- notifications --------------------------------------------------------------------


def test_a_host_stopped_makes_the_host_suspect_and_puts_it_on_maintenance(world: World) -> None:
    seg = new_segment(world)
    host = new_host(world, seg["uuid"], "h1", reserved=True)
    r = notify(world, "COMPUTE_HOST", "h1", STOPPED)
    assert r.status_code == 202, r.text
    n = r.json()["notification"]
    assert (n["status"], n["source_host_uuid"], n["failover_segment_uuid"]) == (
        "new",
        host["uuid"],
        seg["uuid"],
    )
    # The monitor took it as a host-down report: suspect, confirmed by its own checks.
    assert world.monitor.hosts["h1"].state in (HostState.SUSPECT, HostState.LOST)
    shown = world.client.get(f"{V1}/segments/{seg['uuid']}/hosts/{host['uuid']}", headers=ADMIN)
    assert (shown.json()["host"]["on_maintenance"], shown.json()["host"]["reserved"]) == (
        True,
        False,
    )
    again = notify(world, "COMPUTE_HOST", "h1", STOPPED)
    assert "maintenance" in fault(again, 409, "conflictingRequest")


def test_duplicates_within_180_seconds_are_409(world: World) -> None:
    seg = new_segment(world)
    new_host(world, seg["uuid"], "h2")
    started = {"event": "STARTED", "process_name": "nova-compute"}
    first = notify(world, "PROCESS", "h2", started, at="2024-01-01T00:00:00")
    assert first.status_code == 202 and first.json()["notification"]["status"] == "finished"
    dup = notify(world, "PROCESS", "h2", started, at="2024-01-01T00:02:00")
    assert "duplicate" in fault(dup, 409, "conflictingRequest")
    later = notify(world, "PROCESS", "h2", started, at="2024-01-01T00:03:01")
    assert later.status_code == 202


def test_notifications_refused_before_anything_is_stored(world: World) -> None:
    seg = new_segment(world)
    new_host(world, seg["uuid"], "h1")
    fault(notify(world, "COMPUTE_HOST", "h9", STOPPED), 400, "badRequest")  # no such host
    fault(notify(world, "COMPUTE_HOST", "h1", {"event": "stopped"}), 400, "badRequest")
    fault(notify(world, "COMPUTE_HOST", "h1", {**STOPPED, "extra": "x"}), 400, "badRequest")
    fault(notify(world, "VM", "h1", {"event": "LIFECYCLE"}), 400, "badRequest")
    fault(notify(world, "COMPUTE_HOST", "h1", STOPPED, at="soon"), 400, "badRequest")
    # Times at the calendar's ends: the duplicate check and the answer would overflow.
    for edge in ("0001-01-01T00:01:00", "9999-12-31T23:00:00", "0001-01-01T00:00:00+05:00"):
        problem = fault(notify(world, "COMPUTE_HOST", "h1", STOPPED, at=edge), 400, "badRequest")
        assert "generated_time" in problem
    assert world.client.get(f"{V1}/notifications", headers=ADMIN).json()["notifications"] == []
    assert world.monitor.hosts["h1"].state is HostState.UNKNOWN


def test_a_disabled_segment_ignores_its_notifications(world: World) -> None:
    seg = new_segment(world, enabled=False)
    new_host(world, seg["uuid"], "h1")
    n = notify(world, "COMPUTE_HOST", "h1", STOPPED).json()["notification"]
    assert n["status"] == "ignored" and "disabled" in n["message"]
    assert world.monitor.hosts["h1"].state is HostState.UNKNOWN


def test_process_and_vm_reports_are_acted_on_when_the_agent_reports_them_too(
    world: World,
) -> None:
    seg = new_segment(world)
    new_host(world, seg["uuid"], "h2")
    new_host(world, seg["uuid"], "h3")
    stopped = {"event": "STOPPED", "process_name": "nova-compute"}
    lone = notify(world, "PROCESS", "h2", stopped).json()["notification"]
    assert lone["status"] == "ignored" and "agent" in lone["message"]
    world.heartbeat("h3", Checks(compute_alive=False, domains_down=(SERVER,)))
    agreed = notify(world, "PROCESS", "h3", stopped).json()["notification"]
    assert agreed["status"] == "new", agreed
    vm = {"event": "LIFECYCLE", "vir_domain_event": "STOPPED_FAILED", "instance_uuid": SERVER}
    # h3 went on maintenance (a process STOPPED), and its segment is busy with it.
    fault(notify(world, "VM", "h3", vm), 409, "conflictingRequest")
    h3 = world.client.get(f"{V1}/segments/{seg['uuid']}/hosts?name=h3", headers=ADMIN)
    r = world.client.put(
        f"{V1}/segments/{seg['uuid']}/hosts/{h3.json()['hosts'][0]['uuid']}",
        json={"host": {"on_maintenance": False}},
        headers=ADMIN,
    )
    fault(r, 409, "conflictingRequest")
    other = new_segment(world, "seg2")
    new_host(world, other["uuid"], "h1")
    world.heartbeat("h1", Checks(domains_down=(SERVER,)))
    assert notify(world, "VM", "h1", vm).json()["notification"]["status"] == "new"
    gone = {**vm, "instance_uuid": "11111111-2222-4333-8444-555555555555"}
    alone = notify(world, "VM", "h1", gone).json()["notification"]
    assert alone["status"] == "ignored" and "agent" in alone["message"]


def incident_body(host: str, state: str, opened: float, closed: float | None = None) -> Any:
    return {
        "id": f"inc-{host}",
        "host": host,
        "zone": "z",
        "kind": "host",
        "state": state,
        "opened_at": opened,
        "updated_at": opened,
        "closed_at": closed,
        "trace_id": "t",
        "verdicts": [{"kind": "HOST_DOWN", "at": opened, "subject": None}],
        "held_reason": None,
    }


def test_status_details_and_vmoves_follow_the_incident_and_its_recovery(world: World) -> None:
    seg = new_segment(world)
    new_host(world, seg["uuid"], "h1")
    n = notify(world, "COMPUTE_HOST", "h1", STOPPED).json()["notification"]
    uuid = n["notification_uuid"]
    show = f"{V1}/notifications/{uuid}"
    # What the pipeline writes as it goes: the incident, its recovery, an evacuation.
    opened = time.time()
    IncidentStore(world.db).save(incident_body("h1", "CORRECTING", opened))
    recoveries = RecoveryStore(world.db)
    rid = "recover-inc-h1"
    recoveries.put(rid, "inc-h1", "h1", 2, "EVACUATING", opened + 1, {})
    recoveries.put_evacuation(rid, SERVER, "vm1", "h1", result="running", at=opened + 1)
    r = world.client.get(show, headers=ADMIN)
    assert r.json()["notification"]["status"] == "running"
    details = r.json()["notification"]["recovery_workflow_details"]
    assert [d["name"] for d in details] == ["medevac:incident", "medevac:recover"]
    assert (
        "recovery_workflow_details"
        not in world.client.get(show, headers=headers(version="1.0")).json()["notification"]
    )
    listed = world.client.get(f"{V1}/notifications?status=running", headers=ADMIN).json()
    assert [x["notification_uuid"] for x in listed["notifications"]] == [uuid]
    assert "recovery_workflow_details" not in listed["notifications"][0]
    # Under recovery: its segment may not change.
    r = world.client.put(
        f"{V1}/segments/{seg['uuid']}", json={"segment": {"description": "x"}}, headers=ADMIN
    )
    assert "in-use" in fault(r, 409, "conflictingRequest")
    moves = world.client.get(f"{show}/vmoves", headers=ADMIN).json()["vmoves"]
    assert [(m["instance_uuid"], m["status"], m["type"]) for m in moves] == [
        (SERVER, "ongoing", "evacuation")
    ]
    recoveries.put_evacuation(
        rid, SERVER, "vm1", "h1", result="recovered", at=opened + 2, to_host="h2", ended=True
    )
    recoveries.put(rid, "inc-h1", "h1", 2, "COMPLETED", opened + 3, {}, ended=True)
    assert world.client.get(show, headers=ADMIN).json()["notification"]["status"] == "finished"
    move = world.client.get(f"{show}/vmoves?status=succeeded", headers=ADMIN).json()["vmoves"][0]
    assert move["dest_host"] == "h2"
    one = world.client.get(f"{show}/vmoves/{move['uuid']}", headers=ADMIN)
    assert one.status_code == 200 and one.json()["vmove"]["id"] == move["id"]
    fault(world.client.get(f"{show}/vmoves/nope", headers=ADMIN), 404, "itemNotFound")
    fault(world.client.get(f"{V1}/notifications/nope", headers=ADMIN), 404, "itemNotFound")
    r = world.client.put(
        f"{V1}/segments/{seg['uuid']}", json={"segment": {"description": "x"}}, headers=ADMIN
    )
    assert r.status_code == 200


def test_vmoves_are_for_host_notifications_only(world: World) -> None:
    seg = new_segment(world)
    new_host(world, seg["uuid"], "h2")
    n = notify(world, "PROCESS", "h2", {"event": "STARTED", "process_name": "nova-compute"})
    uuid = n.json()["notification"]["notification_uuid"]
    r = world.client.get(f"{V1}/notifications/{uuid}/vmoves", headers=ADMIN)
    fault(r, 400, "badRequest")


def test_notification_lists_filter_and_page(world: World) -> None:
    seg = new_segment(world)
    h2 = new_host(world, seg["uuid"], "h2")
    for minute in range(3):
        payload = {"event": "STARTED", "process_name": f"p{minute}"}
        notify(world, "PROCESS", "h2", payload, at=f"2024-01-01T00:0{minute}:00")

    def listed(query: str) -> list[int]:
        r = world.client.get(f"{V1}/notifications?{query}", headers=ADMIN)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["notifications"]]

    all_ids = listed("")
    assert len(all_ids) == 3 and all_ids == sorted(all_ids, reverse=True)
    assert listed("generated-since=2024-01-01T00:01:00") == all_ids[:2]
    assert listed(f"source_host_uuid={h2['uuid']}&limit=1&marker={all_ids[0]}") == [all_ids[1]]
    assert listed("type=VM") == []
    assert listed("status=finished") == all_ids
    for since in ("x", "0001-01-01T00:00:00%2B05:00"):
        r = world.client.get(f"{V1}/notifications?generated-since={since}", headers=ADMIN)
        fault(r, 400, "badRequest")


def test_the_controllers_own_limits_answer_with_masakaris_faults(world: World) -> None:
    r = world.client.get(f"{V1}/segments?name=a%00", headers=ADMIN)
    assert "NUL" in fault(r, 400, "badRequest")
    big = {"segment": {"name": "x" * 1_100_000, "recovery_method": "auto"}}
    r = world.client.post(f"{V1}/segments", json=big, headers=ADMIN)
    assert "larger than" in fault(r, 413, "overLimit")
    assert world.client.get(f"{V1}/segments", headers=ADMIN).json()["segments"] == []


# -- who may do what ------------------------------------------------------------------


def test_reader_reads_member_sees_nothing_and_no_token_is_401(world: World) -> None:
    seg = new_segment(world)
    reader = headers(READER_TOKEN)
    assert world.client.get(f"{V1}/segments", headers=reader).status_code == 200
    body = {"segment": {"name": "r", "recovery_method": "auto", "service_type": "C"}}
    fault(world.client.post(f"{V1}/segments", json=body, headers=reader), 403, "forbidden")
    fault(world.client.delete(f"{V1}/segments/{seg['uuid']}", headers=reader), 403, "forbidden")
    member = headers(MEMBER_TOKEN)
    for path in ("segments", f"segments/{seg['uuid']}/hosts", "notifications"):
        fault(world.client.get(f"{V1}/{path}", headers=member), 403, "forbidden")
    fault(world.client.post(f"{V1}/segments", json=body, headers=member), 403, "forbidden")
    r = world.client.get(f"{V1}/segments")
    fault(r, 401, "unauthorized")
    assert world.client.get(f"{V1}/segments", headers=ADMIN).json()["segments"][0]["name"] == "seg1"


# -- the recovery's host groups -------------------------------------------------------


def test_the_recovery_sees_a_segment_edit_at_once(world: World) -> None:
    resolver = stored_groups([HostGroup(name="rack", hosts=("h*",))], world.db)

    async def method(host: str) -> tuple[str, RecoveryMethod, tuple[str, ...]]:
        g = await resolver.fresh(host)
        return g.name, g.recovery_method, g.reserved_hosts

    assert asyncio.run(method("h1")) == ("rack", RecoveryMethod.AUTO, ())
    seg = new_segment(world, recovery_method="reserved_host")
    new_host(world, seg["uuid"], "h1")
    new_host(world, seg["uuid"], "h3", reserved=True)
    assert asyncio.run(method("h1")) == ("segment:seg1", RecoveryMethod.RESERVED_HOST, ("h3",))
    world.client.put(
        f"{V1}/segments/{seg['uuid']}", json={"segment": {"enabled": False}}, headers=ADMIN
    )
    assert asyncio.run(method("h1"))[0] == "rack"


def test_a_report_of_a_host_already_lost_follows_its_incident(world: World) -> None:
    seg = new_segment(world)
    new_host(world, seg["uuid"], "h2")
    opened = time.time() - 5
    IncidentStore(world.db).save(incident_body("h2", "CORRECTING", opened))
    world.monitor.presume_lost("h2")  # medevac's own heartbeats found it first
    n = notify(world, "COMPUTE_HOST", "h2", STOPPED).json()["notification"]
    assert n["status"] == "new"
    shown = world.client.get(f"{V1}/notifications/{n['notification_uuid']}", headers=ADMIN)
    assert shown.json()["notification"]["status"] == "running"

"""Masakari's API in medevac, its pure parts: microversions, bodies, what a notification
asks of the monitor, the status derived from incidents and recoveries, paging, and the
host groups segments make."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from medevac.api.masakari import schemas, versions, views
from medevac.monitor.masakari import read_notification
from medevac.monitor.raw import RawFaultKind
from medevac.recovery.groups import GroupResolver, SegmentPolicy, resolve_group
from medevac.recovery.policy import HostGroup, Level, RecoveryMethod, destinations
from medevac.storage.segments import NotificationRow

T0 = 1_700_000_000.0
SERVER = "0a6c6e35-1111-4c2d-9a57-0123456789ab"

# -- microversions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], (1, 0)),
        (["instance-ha 1.2"], (1, 2)),
        (["instance-ha latest"], (1, 3)),
        (["compute 2.53, instance-ha 1.1"], (1, 1)),
        (["compute 2.53"], (1, 0)),  # another service's version is not ours
        (["INSTANCE-HA 1.3"], (1, 3)),
    ],
)
def test_requested_version(values: list[str], expected: tuple[int, int]) -> None:
    assert versions.requested(values) == expected


@pytest.mark.parametrize(
    ("value", "status"),
    [("1.4", 406), ("2.0", 406), ("0.9", 400), ("1.x", 400), ("1", 400), ("01.1", 400)],
)
def test_a_version_out_of_range_is_406_and_a_malformed_one_400(value: str, status: int) -> None:
    with pytest.raises(versions.VersionError) as caught:
        versions.requested([f"instance-ha {value}"])
    assert caught.value.status == status


def test_the_answer_names_the_version_and_varies_on_the_header() -> None:
    assert versions.answer_headers((1, 2)) == {
        "OpenStack-API-Version": "instance-ha 1.2",
        "Vary": "OpenStack-API-Version",
    }


# -- bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [True, "True", "true", "yes", "on", "1", "Y"])
def test_masakari_booleans_take_its_spellings(spelling: object) -> None:
    host = schemas.HostCreate.model_validate(
        {"name": "h1", "type": "COMPUTE", "control_attributes": "SSH", "reserved": spelling}
    )
    assert host.reserved is True


@pytest.mark.parametrize(
    "body",
    [
        {"name": "h1", "type": "COMPUTE_HOST", "control_attributes": "SSH"},  # underscore
        {"name": " h1", "type": "COMPUTE", "control_attributes": "SSH"},  # edge space
        {"name": "h1", "type": "COMPUTE"},  # control_attributes required
        {"name": "h1", "type": "COMPUTE", "control_attributes": "SSH", "bmc": "x"},  # extra
        {"name": "h1", "type": "COMPUTE", "control_attributes": "SSH", "reserved": "maybe"},
    ],
)
def test_host_bodies_are_refused_as_masakari_refuses_them(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        schemas.HostCreate.model_validate(body)


def test_an_update_needs_one_field_at_least() -> None:
    with pytest.raises(ValidationError):
        schemas.SegmentUpdate.model_validate({})
    assert schemas.SegmentUpdate.model_validate({"enabled": "False"}).enabled is False


@pytest.mark.parametrize(
    ("type_", "payload"),
    [
        ("COMPUTE_HOST", {"event": "stopped"}),  # case-sensitive, as in Masakari
        ("COMPUTE_HOST", {"event": "STOPPED", "host_status": "DOWN"}),
        ("PROCESS", {"event": "STOPPED"}),
        ("VM", {"event": "LIFECYCLE", "vir_domain_event": "STOPPED_FAILED", "instance_uuid": "x"}),
        ("VM", {"event": "LIFECYCLE", "instance_uuid": SERVER}),
    ],
)
def test_payloads_are_checked_by_type(type_: str, payload: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        schemas.PAYLOADS[type_].model_validate(payload)


def test_a_generated_time_without_zone_is_utc() -> None:
    assert schemas.parse_time("2024-01-01T12:00:00.123456") == datetime(
        2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC
    )
    with pytest.raises(ValidationError):
        schemas.NotificationCreate.model_validate(
            {"type": "VM", "hostname": "h1", "generated_time": "yesterday", "payload": {}}
        )


# -- what a notification asks of the monitor -----------------------------------------


def read(type_: str, payload: dict[str, str]) -> Any:
    return read_notification("n1", type_, "h1", payload, generated_at=T0, received_at=T0 + 1)


def test_a_host_stopped_is_a_host_down_report_whatever_its_host_status() -> None:
    for status in ("NORMAL", "UNKNOWN"):
        reading = read("COMPUTE_HOST", {"event": "STOPPED", "host_status": status})
        assert reading.fault is not None
        assert reading.fault.kind is RawFaultKind.HOST_DOWN
        assert (reading.fault.host, reading.fault.key) == ("h1", "masakari:n1")
        assert (reading.fault.observed_at, reading.fault.received_at) == (T0, T0 + 1)
        assert reading.maintenance


def test_started_events_are_masakaris_no_ops() -> None:
    for type_, payload in [
        ("COMPUTE_HOST", {"event": "STARTED"}),
        ("PROCESS", {"event": "STARTED", "process_name": "nova-compute"}),
    ]:
        reading = read(type_, payload)
        assert reading.fault is None and reading.finished and not reading.maintenance


def test_only_nova_compute_stopped_is_a_compute_process_report() -> None:
    reading = read("PROCESS", {"event": "STOPPED", "process_name": "nova-compute --debug"})
    assert reading.fault is not None
    assert reading.fault.kind is RawFaultKind.COMPUTE_PROCESS_DOWN
    other = read("PROCESS", {"event": "STOPPED", "process_name": "libvirtd"})
    assert other.fault is None and not other.finished
    assert "nova-compute only" in (other.reason or "")


@pytest.mark.parametrize(
    ("event", "detail", "acted"),
    [
        ("LIFECYCLE", "STOPPED_FAILED", True),
        ("QEMU_GUEST_AGENT_ERROR", "STOPPED_FAILED", True),
        ("IO_ERROR", "IO_ERROR_REPORT", True),
        ("LIFECYCLE", "STOPPED_DESTROYED", False),
        ("REBOOT", "UNKNOWN", False),
    ],
)
def test_vm_events_act_as_in_masakari(event: str, detail: str, acted: bool) -> None:
    reading = read("VM", {"event": event, "vir_domain_event": detail, "instance_uuid": SERVER})
    assert (reading.fault is not None) is acted
    if reading.fault is not None:
        assert reading.fault.kind is RawFaultKind.SERVER_DOWN
        assert reading.fault.details["server_id"] == SERVER


# -- status, derived ------------------------------------------------------------------


def notification(outcome: str = "accepted", at: float = T0, message: str | None = None) -> Any:
    when = datetime.fromtimestamp(at, UTC)
    return NotificationRow(
        1, "n1", "COMPUTE_HOST", "h1", "hu", "su", when, {}, outcome, message, when, None
    )


def incident(state: str = "OPEN", opened: float = T0 + 2, closed: float | None = None) -> Any:
    return {
        "id": "i1",
        "host": "h1",
        "state": state,
        "opened_at": opened,
        "closed_at": closed,
        "held_reason": "guard" if state == "HELD" else None,
        "verdicts": [{"kind": "HOST_DOWN", "at": opened, "subject": None}],
    }


def recovery(state: str, ended: bool, evacuations: list[dict[str, Any]] | None = None) -> Any:
    at = datetime.fromtimestamp(T0 + 3, UTC)
    return {
        "id": "recover-i1",
        "state": state,
        "started_at": at,
        "updated_at": at,
        "ended_at": at if ended else None,
        "evacuations": evacuations or [],
    }


def status(n: Any, inc: Any = None, recs: list[Any] | None = None, now: float = T0 + 5) -> Any:
    return views.notification_status(n, inc, recs or [], now)


def test_status_follows_what_the_notification_led_to() -> None:
    n = notification()
    assert status(n) == ("new", None)
    assert status(n, now=T0 + views.CONFIRM_WINDOW + 1)[0] == "ignored"
    assert status(n, incident("OPEN")) == ("running", None)
    assert status(n, incident("CORRECTING"), [recovery("EVACUATING", False)]) == ("running", None)
    assert status(n, incident("CORRECTED"), [recovery("COMPLETED", True)]) == ("finished", None)
    failed = status(n, incident("CORRECTED"), [recovery("FENCING_FAILED", True)])
    assert failed == ("failed", "recovery recover-i1 ended FENCING_FAILED")
    assert status(n, incident("HELD")) == ("error", "guard")
    assert status(n, incident("CLOSED", closed=T0 + 4)) == ("finished", None)
    assert status(n, incident("OPEN"), now=T0 + views.GIVE_UP_AFTER + 1)[0] == "failed"


def test_what_the_monitor_did_not_take_keeps_its_reason() -> None:
    assert status(notification("ignored", message="lost already")) == ("ignored", "lost already")
    assert status(notification("finished", message="no-op")) == ("finished", "no-op")


def test_the_incident_linked_is_the_one_open_when_it_came_or_opened_soon_after() -> None:
    n = notification()
    older_closed = {**incident("CLOSED", opened=T0 - 100, closed=T0 - 50), "id": "old"}
    open_before = {**incident("OPEN", opened=T0 - 10), "id": "before"}
    after = {**incident("OPEN", opened=T0 + 2), "id": "after"}
    too_late = {**incident("OPEN", opened=T0 + views.CONFIRM_WINDOW + 5), "id": "late"}
    other_host = {**incident("OPEN", opened=T0 + 1), "host": "h2", "id": "other"}
    assert views.linked_incident(n, [older_closed, open_before, after])["id"] == "before"  # type: ignore[index]
    assert views.linked_incident(n, [older_closed, other_host, after])["id"] == "after"  # type: ignore[index]
    assert views.linked_incident(n, [older_closed, too_late]) is None
    assert views.linked_incident(notification("ignored"), [after]) is None


def test_vmoves_and_progress_come_from_the_evacuations() -> None:
    at = datetime.fromtimestamp(T0 + 4, UTC)
    evacs = [
        {"id": 7, "server_id": SERVER, "server_name": "vm1", "from_host": "h1",
         "to_host": "h2", "started_at": at, "ended_at": at, "result": "recovered", "detail": {}},
        {"id": 8, "server_id": "s2", "server_name": "vm2", "from_host": "h1",
         "to_host": None, "started_at": at, "ended_at": None, "result": "running", "detail": {}},
    ]  # fmt: skip
    recs = [recovery("EVACUATING", False, evacs)]
    moves = views.vmoves(notification(), recs)
    assert [(m["id"], m["status"], m["dest_host"]) for m in moves] == [
        (7, "succeeded", "h2"),
        (8, "ongoing", None),
    ]
    assert moves[0]["uuid"] == views.vmoves(notification(), recs)[0]["uuid"]  # stable
    details = views.workflow_details(incident("CORRECTING"), recs)
    assert [d["name"] for d in details] == ["medevac:incident", "medevac:recover"]
    assert details[1]["state"] == "RUNNING" and details[1]["progress"] == 0.5
    assert any("vm1" in step["message"] for step in details[1]["progress_details"])


# -- paging ---------------------------------------------------------------------------


ITEMS = [
    {"id": 1, "name": "b", "created_at": 10.0},
    {"id": 2, "name": "a", "created_at": 20.0},
    {"id": 3, "name": "c", "created_at": 20.0},
]


def test_paging_sorts_by_created_at_desc_by_default_and_continues_after_the_marker() -> None:
    sort = views.sort_params([], [], ("id", "name", "created_at"))
    assert [i["id"] for i in views.page(ITEMS, sort, None, 10)] == [3, 2, 1]
    assert [i["id"] for i in views.page(ITEMS, sort, 3, 1)] == [2]
    by_name = views.sort_params(["name"], ["asc"], ("name",))
    assert [i["id"] for i in views.page(ITEMS, by_name, None, 2)] == [2, 1]


def test_paging_refuses_an_unknown_marker_key_or_direction() -> None:
    with pytest.raises(views.BadPage, match="Marker 9"):
        views.page(ITEMS, [("id", False)], 9, 10)
    with pytest.raises(views.BadPage, match="Sort key"):
        views.sort_params(["password"], [], ("id",))
    with pytest.raises(views.BadPage, match="direction"):
        views.sort_params(["id"], ["up"], ("id",))


# -- host groups ----------------------------------------------------------------------


CONFIGURED = (HostGroup(name="rack1", hosts=("h*",), level=Level.FENCE, concurrency=2),)


def segment(enabled: bool = True, **kw: Any) -> SegmentPolicy:
    values: dict[str, Any] = {
        "name": "seg",
        "recovery_method": RecoveryMethod.RH_PRIORITY,
        "enabled": enabled,
        "hosts": ("h1", "h2", "h3"),
        "reserved_hosts": ("h3",),
    }
    return SegmentPolicy(**{**values, **kw})


def test_a_segment_decides_its_hosts_method_and_reserved_hosts_over_the_configuration() -> None:
    group = resolve_group("h1", [segment()], CONFIGURED)
    assert group.name == "segment:seg"
    assert group.recovery_method is RecoveryMethod.RH_PRIORITY
    assert destinations(group, "h1") == ["h3", None]
    assert (group.level, group.concurrency) == (Level.FENCE, 2)  # the rest: configured


def test_hosts_in_no_enabled_segment_keep_their_configured_group() -> None:
    assert resolve_group("h9", [segment()], CONFIGURED).name == "rack1"
    assert resolve_group("h1", [segment(enabled=False)], CONFIGURED).name == "rack1"
    assert resolve_group("x1", [], CONFIGURED).name == "default"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_resolver_reads_again_after_its_ttl_or_a_write() -> None:
    stored = [segment(recovery_method=RecoveryMethod.AUTO)]
    reads = []
    writes = [0]
    clock = Clock()

    def load() -> list[SegmentPolicy]:
        reads.append(clock.now)
        return list(stored)

    resolver = GroupResolver(CONFIGURED, load, changed=lambda: writes[0], ttl=2.0, clock=clock)

    async def scenario() -> None:
        assert (await resolver.fresh("h1")).recovery_method is RecoveryMethod.AUTO
        stored[0] = segment(recovery_method=RecoveryMethod.RESERVED_HOST)
        clock.now = 1.0
        assert (await resolver.fresh("h1")).recovery_method is RecoveryMethod.AUTO  # cached
        writes[0] += 1  # a write through this process's store
        assert (await resolver.fresh("h1")).recovery_method is RecoveryMethod.RESERVED_HOST
        stored[0] = segment(enabled=False)
        clock.now = 3.5  # another controller's write: seen once the ttl passed
        assert (await resolver.fresh("h1")).name == "rack1"

    asyncio.run(scenario())
    assert reads == [0.0, 1.0, 3.5]


def test_the_resolver_keeps_the_last_segments_when_the_store_fails() -> None:
    calls = []

    def load() -> list[SegmentPolicy]:
        calls.append(1)
        if len(calls) > 1:
            raise OSError("store down")
        return [segment()]

    clock = Clock()
    resolver = GroupResolver(CONFIGURED, load, ttl=1.0, clock=clock)

    async def scenario() -> None:
        assert (await resolver.fresh("h1")).name == "segment:seg"
        clock.now = 5.0
        assert (await resolver.fresh("h1")).name == "segment:seg"

    asyncio.run(scenario())
    assert len(calls) == 2


def test_a_resolver_without_a_store_is_the_configuration() -> None:
    resolver = GroupResolver(CONFIGURED)
    assert resolver.group_of("h1").name == "rack1"
    assert not resolver.stale

"""The maintenance routes' contract over real HTTP handling and the test's database:
roles, clear 4xx errors for bad input, nothing started by a refused request, a member
answering for its own project's servers only. (The maintenance itself: tests/lab.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from medevac.cloud.errors import InvalidRequest
from medevac.cluster.ownership import Ownership, SharedOwnership, SoleController
from medevac.config import Settings
from medevac.recovery.maintenance import Maintenance
from medevac.recovery.maintenance_flow import MaintenanceWorkflows
from medevac.storage import Database
from medevac.storage.maintenances import MaintenanceStore
from medevac.storage.records import HostStore
from tests.api_world import OTHER_MEMBER_TOKEN, build_world
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN

pytestmark = pytest.mark.databases

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
READER = {"X-Auth-Token": READER_TOKEN}
MEMBER = {"X-Auth-Token": MEMBER_TOKEN}  # project p1
OTHER = {"X-Auth-Token": OTHER_MEMBER_TOKEN}  # project p2


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(build_world(settings, db).app) as c:
        yield c


def test_a_start_with_bad_input_is_refused_clearly_and_starts_nothing(
    client: TestClient, db: Database
) -> None:
    url = "/v1/hosts/h1/maintenance"
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    cases = [
        ({"deadline": "tomorrow"}, 400, "not an ISO 8601 time"),
        ({"deadline": past}, 400, "is past"),
        ({"deadline": "0001-01-01T00:00:00+05:00"}, 400, "is past"),
        # Valid ISO 8601, but past year 9999 once in UTC: refused here, not in the store.
        ({"deadline": "9999-12-31T23:59:59-12:00"}, 400, "more than a year ahead"),
        ({"deadline": "9999-12-31T23:59:59"}, 400, "more than a year ahead"),
        ({"deadline": far}, 400, "more than a year ahead"),
        ({"reason": ""}, 400, "reason"),
        ({"reason": "x" * 256}, 400, "reason"),
        ({"reason": "ok", "extra": 1}, 400, "extra"),
    ]
    for body, status, says in cases:
        r = client.post(url, json=body, headers=ADMIN)
        assert r.status_code == status and says in r.text, (body, r.status_code, r.text)
    r = client.post("/v1/hosts/nowhere/maintenance", json={}, headers=ADMIN)
    assert r.status_code == 404 and "unknown host" in r.text
    for headers in (READER, MEMBER):
        assert client.post(url, json={}, headers=headers).status_code == 403
        assert client.delete(url, headers=headers).status_code == 403
    assert MaintenanceStore(db).open_all() == {}


def test_without_recovery_a_maintenance_cannot_start_and_says_why(client: TestClient) -> None:
    r = client.post("/v1/hosts/h1/maintenance", json={"reason": "disks"}, headers=ADMIN)
    assert r.status_code == 503 and "recovery enabled" in r.text


def test_hosts_show_their_open_maintenance_and_readers_see_it(
    client: TestClient, db: Database
) -> None:
    assert client.get("/v1/hosts/h1/maintenance", headers=READER).status_code == 404
    store = MaintenanceStore(db)
    store.open("m1", "h1", "disks", None, 1.0, "ops", "t1")
    store.put_servers(
        "m1",
        [
            {"server_id": "s1", "name": "vm1", "project_id": "p1", "ha": True},
            {"server_id": "s2", "name": "vm2", "project_id": "p2", "ha": False},
        ],
    )
    hosts = {h["name"]: h for h in client.get("/v1/hosts", headers=READER).json()["hosts"]}
    assert hosts["h2"]["maintenance"] is None
    shown = hosts["h1"]["maintenance"]
    assert shown["state"] == "SCHEDULED" and shown["progress"]["servers"] == 2
    assert client.get("/v1/hosts/h1/maintenance", headers=READER).json()["id"] == "m1"
    assert client.get("/v1/hosts/h1/maintenance", headers=MEMBER).status_code == 403


def test_an_owner_answers_only_for_its_own_servers(settings: Settings, db: Database) -> None:
    audited: list[tuple[Any, ...]] = []
    maintenance = Maintenance(
        cast(MaintenanceWorkflows, None),  # the answers never reach a workflow here
        MaintenanceStore(db),
        cast(Any, None),
        SoleController(),
        emit=lambda events: None,
        audit=lambda *entry: audited.append(entry),
        host_state=lambda host: "MAINTENANCE",
        lifecycle=lambda *a: None,
    )
    with TestClient(build_world(settings, db, maintenance).app) as client:
        answers_for_own_servers_only(client, db)
    assert [(kind, host, by) for kind, host, by, *_ in audited] == [
        ("maintenance.answer", "h1", "tenant"),
        ("maintenance.answer", "h1", "ops"),
    ]


def answers_for_own_servers_only(client: TestClient, db: Database) -> None:
    url = "/v1/hosts/h1/maintenance/answers"
    assert (
        client.post(url, json={"server_id": "s1", "answer": "ack"}, headers=MEMBER).status_code
        == 404
    )
    store = MaintenanceStore(db)
    store.open("m1", "h1", "disks", None, 1.0, "ops", "t1")
    store.put_servers("m1", [{"server_id": "s1", "name": "vm1", "project_id": "p1", "ha": True}])
    bad = client.post(url, json={"server_id": "s1", "answer": "maybe"}, headers=MEMBER)
    assert bad.status_code == 400 and "answer" in bad.text
    foreign = client.post(url, json={"server_id": "s1", "answer": "leave"}, headers=OTHER)
    assert foreign.status_code == 404  # not its server: not even said to exist
    assert (
        client.post(url, json={"server_id": "s1", "answer": "ack"}, headers=READER).status_code
        == 403
    )
    assert store.answers("m1") == {}
    mine = client.post(url, json={"server_id": "s1", "answer": "leave"}, headers=MEMBER)
    assert mine.status_code == 200 and mine.json()["answer"] == "leave"
    admin = client.post(url, json={"server_id": "s1", "answer": "ack"}, headers=ADMIN)
    assert admin.status_code == 200 and admin.json()["answered_by"] == "ops"
    assert store.answers("m1") == {"s1": "ack"}  # the last one counts
    store.move("m1", "MIGRATING", 2.0, allowed=["SCHEDULED"])
    late = client.post(url, json={"server_id": "s1", "answer": "leave"}, headers=MEMBER)
    assert late.status_code == 409 and "MIGRATING" in late.text
    assert store.answers("m1") == {"s1": "ack"}


class Lifecycles:
    """The hosts' lifecycles as the inspector moves them for a maintenance."""

    def __init__(self, **states: str) -> None:
        self.states = {"h1": "UP", "h2": "UP", "h3": "UP", **states}

    def state(self, host: str) -> str:
        return self.states[host]

    def move(self, host: str, started: bool, detail: dict[str, Any], trace: str | None) -> Any:
        want, to = ("UP", "MAINTENANCE") if started else ("MAINTENANCE", "UP")
        if self.states[host] != want:
            return None
        self.states[host] = to
        return to


class Nova:
    """A compute service API whose enables fail ``refusals`` times first."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.enabled: list[str] = []

    async def set_enabled(self, host: str, enabled: bool, reason: str | None = None) -> None:
        if self.refusals:
            self.refusals -= 1
            raise InvalidRequest("Service is being updated", status=400)
        self.enabled.append(host)


def maintenance_on(
    db: Database,
    lifecycles: Lifecycles,
    nova: Nova,
    audited: list[tuple[Any, ...]],
    emitted: list[Any],
    ownership: Ownership | None = None,
) -> Maintenance:
    return Maintenance(
        cast(MaintenanceWorkflows, None),  # no DBOS here: a workflow cannot start
        MaintenanceStore(db),
        cast(Any, nova),
        ownership or SoleController(),
        emit=emitted.extend,
        audit=lambda *entry: audited.append(entry),
        host_state=lifecycles.state,
        lifecycle=lifecycles.move,
    )


def test_a_start_whose_workflow_cannot_start_is_undone_and_says_so(
    settings: Settings, db: Database
) -> None:
    lifecycles, audited = Lifecycles(), []  # type: ignore[var-annotated]
    maintenance = maintenance_on(db, lifecycles, Nova(), audited, [])
    with TestClient(build_world(settings, db, maintenance).app) as client:
        r = client.post("/v1/hosts/h1/maintenance", json={"reason": "disks"}, headers=ADMIN)
        assert r.status_code == 503 and "could not start its workflow" in r.text, r.text
        assert "nothing was changed" in r.text
        assert client.get("/v1/hosts/h1/maintenance", headers=READER).json()["state"] == "ENDED"
    assert lifecycles.states["h1"] == "UP"
    assert MaintenanceStore(db).current("h1") is None  # the host is free for another one
    assert [kind for kind, *_ in audited] == ["maintenance.start_failed"]


def test_an_end_that_nova_refused_completes_when_asked_again_and_once(
    settings: Settings, db: Database
) -> None:
    lifecycles, nova = Lifecycles(h1="MAINTENANCE"), Nova(refusals=1)
    audited: list[tuple[Any, ...]] = []
    emitted: list[Any] = []
    store = MaintenanceStore(db)
    store.open("m1", "h1", "disks", None, 1.0, "ops", "t1")
    store.put_servers("m1", [{"server_id": "s1", "name": "vm1", "project_id": "p1", "ha": True}])
    maintenance = maintenance_on(db, lifecycles, nova, audited, emitted)
    url = "/v1/hosts/h1/maintenance"
    with TestClient(build_world(settings, db, maintenance).app) as client:
        refused = client.delete(url, headers=ADMIN)
        assert refused.status_code == 409 and "Service is being updated" in refused.text
        # Half done: ENDED, but the host still under maintenance and nobody told.
        assert lifecycles.states["h1"] == "MAINTENANCE" and emitted == []
        assert [kind for kind, *_ in audited] == ["maintenance.enable_failed"]
        again = client.delete(url, headers=ADMIN)
        assert again.status_code == 200, again.text
        assert again.json()["service_enabled"] is True and again.json()["id"] == "m1"
        assert client.delete(url, headers=ADMIN).status_code == 404  # over: nothing to end
    assert nova.enabled == ["h1"] and lifecycles.states["h1"] == "UP"
    assert [kind for kind, *_ in audited] == ["maintenance.enable_failed", "maintenance.ended"]
    assert all(trace == "t1" for *_, trace in audited)
    told = [(e.event_type, e.traits.get("instance_id")) for e in emitted]
    assert told == [("maintenance.complete", "s1"), ("maintenance.complete", None)]


def test_a_replaced_owner_cannot_put_a_host_back_from_maintenance(
    settings: Settings, db: Database
) -> None:
    """No open maintenance, the host still under MAINTENANCE (an earlier end whose
    enable failed): the end is still checked against the host's epoch in the store."""
    hosts = HostStore(db)
    old = hosts.claim("h1", "z", "ctl-1", 1.0)
    hosts.claim("h1", "z", "ctl-2", 2.0)  # taken over while ctl-1 was paused
    ownership = SharedOwnership("ctl-1", {"h1": "z"}, hosts, lambda: True)
    ownership.held["h1"] = old  # what ctl-1 still believes
    lifecycles, nova = Lifecycles(h1="MAINTENANCE"), Nova()
    audited: list[tuple[Any, ...]] = []
    emitted: list[Any] = []
    maintenance = maintenance_on(db, lifecycles, nova, audited, emitted, ownership)
    with TestClient(build_world(settings, db, maintenance).app) as client:
        r = client.delete("/v1/hosts/h1/maintenance", headers=ADMIN)
        assert r.status_code == 409 and "does not own" in r.text, r.text
    assert nova.enabled == [] and lifecycles.states["h1"] == "MAINTENANCE"
    assert emitted == [] and audited == []
    assert db.audit_events(subject="h1")[0].kind == "host.stale_owner"


def test_a_controller_that_does_not_own_a_host_says_so_whatever_it_remembers_of_it(
    settings: Settings, db: Database
) -> None:
    """A controller that held h1 once still remembers it under MAINTENANCE: neither a
    start nor an end is decided on that memory; both say who should be asked."""
    hosts = HostStore(db)
    hosts.claim("h1", "z", "ctl-2", 1.0)
    ownership = SharedOwnership("ctl-1", {"h1": "z"}, hosts, lambda: True)  # holds nothing
    lifecycles, nova = Lifecycles(h1="MAINTENANCE"), Nova()
    audited: list[tuple[Any, ...]] = []
    emitted: list[Any] = []
    maintenance = maintenance_on(db, lifecycles, nova, audited, emitted, ownership)
    url = "/v1/hosts/h1/maintenance"
    with TestClient(build_world(settings, db, maintenance).app) as client:
        for r in (client.post(url, json={"reason": "disks"}, headers=ADMIN),
                  client.delete(url, headers=ADMIN)):  # fmt: skip
            assert r.status_code == 409, r.text
            assert "ctl-1 does not own h1" in r.text, r.text
    assert nova.enabled == [] and lifecycles.states["h1"] == "MAINTENANCE"
    assert emitted == [] and audited == [] and MaintenanceStore(db).latest("h1") is None

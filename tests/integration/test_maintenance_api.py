"""The maintenance routes' contract over real HTTP handling and the test's database:
roles, clear 4xx errors for bad input, nothing started by a refused request, a member
answering for its own project's servers only. (The maintenance itself: tests/lab.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from medevac.cluster.ownership import SoleController
from medevac.config import Settings
from medevac.recovery.maintenance import Maintenance
from medevac.recovery.maintenance_flow import MaintenanceWorkflows
from medevac.storage import Database
from medevac.storage.maintenances import MaintenanceStore
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
    cases = [
        ({"deadline": "tomorrow"}, 400, "not an ISO 8601 time"),
        ({"deadline": past}, 400, "is past"),
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

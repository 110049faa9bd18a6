"""Planned maintenances in the store, on SQLite and PostgreSQL: one open per host,
answers only while scheduled, no end while migrating, every write fenced."""

from __future__ import annotations

import pytest

from medevac.storage import Database
from medevac.storage.maintenances import MaintenanceExists, MaintenanceStore, WrongState
from medevac.storage.records import Fence, HostStore, StaleOwner

SERVERS = [
    {"server_id": "s1", "name": "vm1", "project_id": "p1", "ha": True},
    {"server_id": "s2", "name": "vm2", "project_id": "p2", "ha": False},
]


def opened(db: Database, mid: str = "m1", host: str = "h1") -> MaintenanceStore:
    db.migrate()
    store = MaintenanceStore(db)
    store.open(mid, host, "new disks", 2_000_000_000.0, 1.0, "admin", "trace-1")
    store.put_servers(mid, SERVERS)
    return store


def test_a_maintenance_is_recorded_with_its_servers_and_one_per_host(fresh_db: Database) -> None:
    store = opened(fresh_db)
    store.put_servers("m1", SERVERS)  # a step run again adds nothing
    body = store.current("h1")
    assert body is not None
    assert (body["state"], body["reason"], body["started_by"]) == (
        "SCHEDULED",
        "new disks",
        "admin",
    )
    assert body["deadline"].startswith("2033-05-18T03:33:20")
    assert [s["server_id"] for s in body["servers"]] == ["s1", "s2"]
    assert body["progress"]["servers"] == 2 and body["progress"]["pending"] == 2
    with pytest.raises(MaintenanceExists):
        store.open("m2", "h1", "again", None, 2.0, "admin", "trace-2")
    store.open("m3", "h2", "other host", None, 2.0, "admin", "trace-3")
    assert sorted(store.open_all()) == ["h1", "h2"]


def test_answers_count_until_the_migrations_start_and_the_last_one_wins(
    fresh_db: Database,
) -> None:
    store = opened(fresh_db)
    assert store.answer("m1", "s1", "ack", "tenant-a", 2.0) is not None
    assert store.answer("m1", "s1", "leave", "tenant-a", 3.0) is not None
    assert store.answer("m1", "nope", "ack", "tenant-a", 3.0) is None
    assert store.answers("m1") == {"s1": "leave"}
    assert store.move("m1", "MIGRATING", 4.0, allowed=["SCHEDULED"]) == "SCHEDULED"
    assert store.move("m1", "MIGRATING", 4.0, allowed=["SCHEDULED"]) is None
    with pytest.raises(WrongState):
        store.answer("m1", "s2", "ack", "tenant-b", 5.0)
    assert store.answers("m1") == {"s1": "leave"}


def test_an_end_waits_for_the_migrations_and_frees_the_host(fresh_db: Database) -> None:
    store = opened(fresh_db)
    store.move("m1", "MIGRATING", 2.0, allowed=["SCHEDULED"])
    with pytest.raises(WrongState, match="MIGRATING"):
        store.end("m1", "admin", 3.0)
    store.set_server("m1", "s1", result="migrated", at=4.0, to_host="h2", attempts=1, ended=True)
    store.move("m1", "READY", 5.0, allowed=["MIGRATING"], detail={"servers_left": 1})
    assert store.end("m1", "admin", 6.0) == "READY"
    with pytest.raises(WrongState):
        store.end("m1", "admin", 7.0)
    assert store.current("h1") is None
    last = store.latest("h1")
    assert last is not None and last["state"] == "ENDED" and last["ended_by"] == "admin"
    assert last["servers"][0]["to_host"] == "h2" and last["progress"]["migrated"] == 1
    assert last["detail"] == {"servers_left": 1}
    store.open("m2", "h1", "next", None, 8.0, "admin", "trace-2")  # free again
    assert (store.latest("h1") or {})["id"] == "m2"


def test_a_replaced_owner_records_nothing(fresh_db: Database) -> None:
    store = opened(fresh_db)
    hosts = HostStore(fresh_db)
    old = hosts.claim("h1", "z", "ctl-1", 1.0)
    hosts.claim("h1", "z", "ctl-2", 2.0)
    stale = Fence("h1", "ctl-1", old, "maintenance.state", {}, None, 3.0)
    with pytest.raises(StaleOwner):
        store.move("m1", "MIGRATING", 3.0, allowed=["SCHEDULED"], fence=stale)
    with pytest.raises(StaleOwner):
        store.open("m9", "h9", "x", None, 3.0, "admin", "t", fence=stale)
    assert (store.current("h1") or {})["state"] == "SCHEDULED"


def test_an_ended_maintenance_is_completed_once_and_only_once_ended(fresh_db: Database) -> None:
    store = opened(fresh_db)
    assert store.completed("m1", 2.0) is False  # still open: nothing to complete
    store.end("m1", "admin", 3.0)
    assert store.completed("m1", 4.0) is True
    assert store.completed("m1", 5.0) is False  # said once, to the first caller
    assert store.completed("nope", 5.0) is False
    assert (store.latest("h1") or {})["detail"] == {"completed": True}

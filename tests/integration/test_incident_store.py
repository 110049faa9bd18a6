"""Incidents, host lifecycles and recoveries in the store, on SQLite and on PostgreSQL:
the inspector's journal and host states write them, a restarted controller reads them
back, and the API lists and fetches them from the database."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from medevac.api import create_app
from medevac.config import Settings
from medevac.inspector.executor import ActionExecutor, RetryPolicy
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.host_states import HostStates
from medevac.inspector.incidents import IncidentState
from medevac.inspector.inspector import Inspector
from medevac.inspector.journal import IncidentJournal
from medevac.inspector.lifecycle import Happening, HostState
from medevac.inspector.topology import Topology
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.records import (
    AlarmStore,
    HostStore,
    IncidentStore,
    OutboxStore,
    RecoveryStore,
)
from tests.conftest import ADMIN_TOKEN, READER_TOKEN
from tests.unit.test_inspector_flow import Events, RecordingCloud

pytestmark = pytest.mark.databases

HOSTS = {"h1": "z", "h2": "z", "h3": "z", "h4": "z"}
READER = {"X-Auth-Token": READER_TOKEN}


def inspector_on(journal: IncidentJournal, states: HostStates) -> Inspector:
    cloud = RecordingCloud()
    return Inspector(
        HOSTS,
        Topology(),
        ActionExecutor(cloud, concurrency=2, retry=RetryPolicy(attempts=1, backoff=0.001)),
        Events(cloud),
        journal,
        ZoneGuard(),
        host_states=states,
    )


def verdict(kind: VerdictKind, host: str, subject: str | None = None) -> Verdict:
    return Verdict(kind, host, time.time(), {"test": True}, subject)


def api(settings: Settings, db: Database, inspector: Inspector) -> TestClient:
    notifier = Notifier(AlarmStore(db), OutboxStore(db))
    app = create_app(settings, db, inspector=inspector, notifier=notifier)
    return TestClient(app, raise_server_exceptions=False)


def test_incidents_are_journaled_read_back_after_a_restart_and_served_from_the_store(
    settings: Settings, db: Database
) -> None:
    """h1 lost (stays open), h2's link down then up (closes): the journal writes both,
    the host states write h1's lifecycle with its audit entries; a new inspector adopts
    only the open one, and the API finds the closed one in the database."""

    async def first_run() -> dict[str, dict[str, Any]]:
        journal = IncidentJournal(IncidentStore(db))
        states = HostStates(HostStore(db))
        inspector = inspector_on(journal, states)
        journal.start()
        states.start()
        try:
            inspector.on_verdict(verdict(VerdictKind.HOST_DOWN, "h1"))
            inspector.on_verdict(verdict(VerdictKind.LINK_DOWN, "h2", "physnet1"))
            await inspector.drain()
            closing = inspector.open["h2"]
            inspector.on_verdict(verdict(VerdictKind.LINK_UP, "h2", "physnet1"))
            await inspector.drain()
            assert closing.state is IncidentState.CLOSED and "h2" not in inspector.open
            return {"h1": inspector.open["h1"].as_dict(), "h2": closing.as_dict()}
        finally:
            await journal.close()
            await states.close()

    written = asyncio.run(first_run())
    store = IncidentStore(db)
    assert store.open_incidents() == [written["h1"]]
    assert store.recent(state="CLOSED") == [written["h2"]]
    assert store.recent(host="h1") == [written["h1"]]
    [h1] = HostStore(db).all()
    assert (h1.name, h1.generation) == ("h1", 1) and h1.state != "UP"
    assert [e.kind for e in db.audit_events(subject="h1")] == ["host.state"]

    async def restart() -> tuple[list[str], str]:
        journal = IncidentJournal(IncidentStore(db))
        states = HostStates(HostStore(db))
        await states.load()
        adopted = await journal.load_open()
        return [i.as_dict()["id"] for i in adopted], states.life("h1").state.value

    adopted, h1_state = asyncio.run(restart())
    assert adopted == [written["h1"]["id"]] and h1_state == h1.state

    # A controller that adopted nothing serves both from the database alone.
    idle = inspector_on(IncidentJournal(IncidentStore(db)), HostStates())
    with api(settings, db, idle) as client:
        listed = client.get("/v1/incidents", headers=READER).json()["incidents"]
        assert [i["id"] for i in listed] == [written["h2"]["id"], written["h1"]["id"]]
        closed = client.get("/v1/incidents?state=CLOSED&host=h2", headers=READER).json()
        assert closed["incidents"] == [written["h2"]]
        assert client.get("/v1/incidents?host=h3", headers=READER).json() == {"incidents": []}
        one = client.get(f"/v1/incidents/{written['h2']['id']}", headers=READER)
        assert one.status_code == 200 and one.json() == written["h2"]
        gone = client.get(f"/v1/incidents/{uuid.uuid4()}", headers=READER)
        assert gone.status_code == 404


def test_the_database_refuses_a_second_open_incident_for_a_host(db: Database) -> None:
    """Whoever writes: the unique index on the open incidents' host holds on both."""
    store = IncidentStore(db)

    def body(incident_id: str, state: str) -> dict[str, Any]:
        now = time.time()
        return {
            "id": incident_id,
            "host": "h1",
            "zone": "z",
            "kind": "host",
            "state": state,
            "opened_at": now,
            "updated_at": now,
            "closed_at": now if state == "CLOSED" else None,
            "trace_id": uuid.uuid4().hex,
        }

    store.save(body("first", "OPEN"))
    with pytest.raises(IntegrityError):
        store.save(body("second", "OPEN"))
    store.save(body("first", "CLOSED"))
    store.save(body("second", "OPEN"))  # once the first has closed
    assert [b["id"] for b in store.open_incidents()] == ["second"]
    assert sorted(b["id"] for b in store.recent(host="h1")) == ["first", "second"]


def test_recoveries_and_evacuations_are_upserted_and_served_from_the_store(
    settings: Settings, db: Database
) -> None:
    """A workflow step that runs again writes the same row again: one recovery, one row
    per server; the API lists and filters them."""
    store = RecoveryStore(db)
    t0 = time.time()
    for _ in range(2):
        store.put("recover-i1", "i1", "h1", 2, "STARTED", t0, {"verdict": "HOST_DOWN"})
        for sid in ("s1", "s2"):
            store.put_evacuation("recover-i1", sid, f"vm-{sid}", "h1", result="running", at=t0)
    store.put_evacuation(
        "recover-i1", "s1", "vm-s1", "h1", result="recovered", at=t0 + 2, to_host="h3", ended=True
    )
    store.put("recover-i1", "i1", "h1", 2, "COMPLETED", t0 + 3, {"evacuated": 1}, ended=True)
    store.put("recover-i2", "i2", "h2", 1, "STARTED", t0 + 4, {})

    got = store.get("recover-i1")
    assert got is not None
    assert (got["state"], got["ended_at"]) == ("COMPLETED", pytest.approx(t0 + 3))
    assert got["detail"] == {"verdict": "HOST_DOWN", "evacuated": 1}
    rows = {e["server_id"]: (e["result"], e["to_host"]) for e in got["evacuations"]}
    assert rows == {"s1": ("recovered", "h3"), "s2": ("running", None)}

    idle = inspector_on(IncidentJournal(IncidentStore(db)), HostStates())
    with api(settings, db, idle) as client:
        admin = {"X-Auth-Token": ADMIN_TOKEN}
        listed = client.get("/v1/recoveries", headers=admin).json()["recoveries"]
        assert [r["id"] for r in listed] == ["recover-i2", "recover-i1"]
        only = client.get("/v1/recoveries?host=h1", headers=admin).json()["recoveries"]
        assert [r["id"] for r in only] == ["recover-i1"]
        one = client.get("/v1/recoveries/recover-i1", headers=admin).json()
        assert len(one["evacuations"]) == 2
        assert client.get("/v1/recoveries/recover-none", headers=admin).status_code == 404
        history = client.get("/v1/history?server=s1&host=h1", headers=admin).json()
        assert [(e["server_id"], e["result"]) for e in history["evacuations"]] == [
            ("s1", "recovered")
        ]


def test_a_host_gained_is_taken_with_the_lifecycle_its_previous_owner_left(
    db: Database,
) -> None:
    """Two controllers on one store, both started while h1 was UP: the first puts h1
    under maintenance; the second, once it gains h1, reloads its lifecycle from the
    store and goes on from there (its next move written, not refused as stale)."""

    async def run() -> tuple[str, str, int, int]:
        first, second = HostStates(HostStore(db)), HostStates(HostStore(db))
        await first.load()
        await second.load()
        first.start()
        second.start()
        try:
            assert first.happen("h1", "z", Happening.MAINTENANCE, "t1") is HostState.MAINTENANCE
            await first.flush()
            stale = second.life("h1").state.value
            await second.reload({"h1", "h2"})  # h2: never moved, stays as it was
            taken = second.life("h1")
            second.happen("h1", "z", Happening.MAINTENANCE_ENDED, "t2")
            await second.flush()
            return stale, taken.state.value, taken.generation, second.conflicts
        finally:
            await first.close()
            await second.close()

    stale, taken, generation, conflicts = asyncio.run(run())
    assert (stale, taken, generation, conflicts) == ("UP", "MAINTENANCE", 1, 0)
    row = HostStore(db).get("h1")
    assert row is not None and (row.state, row.generation) == ("UP", 2)
    assert HostStore(db).get("h2") is None

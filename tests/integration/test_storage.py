"""Storage: migrations run on SQLite and PostgreSQL, are idempotent and match the models."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from medevac.storage import Base, Database, StorageError, WriterBusy


def test_migrate_creates_schema_and_is_idempotent(fresh_db: Database) -> None:
    assert fresh_db.current_revision() is None
    fresh_db.migrate()
    fresh_db.migrate()
    assert fresh_db.current_revision() == fresh_db.head_revision()


def test_models_match_migrations(fresh_db: Database) -> None:
    fresh_db.migrate()
    with fresh_db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_audit_round_trip(fresh_db: Database) -> None:
    fresh_db.migrate()
    first = fresh_db.record_audit("host.state", "host1", "inspector", {"to": "DOWN"}, "trace-1")
    second = fresh_db.record_audit("host.state", "host2", "inspector", {"to": "UP"})
    assert second > first
    events = fresh_db.audit_events()
    assert [e.subject for e in events] == ["host2", "host1"]
    only = fresh_db.audit_events(subject="host1")
    assert only[0].detail == {"to": "DOWN"} and only[0].trace_id == "trace-1"
    assert only[0].at.tzinfo is not None or fresh_db.url.get_backend_name() == "sqlite"


def test_a_float_json_cannot_hold_is_stored_as_null(fresh_db: Database) -> None:
    """PostgreSQL refuses Infinity and NaN in JSON: every database stores null instead,
    and the rest of the record is kept."""
    fresh_db.migrate()
    detail = {"phi": float("inf"), "gap": [1.5, float("nan")], "peer": {"s": -float("inf")}}
    fresh_db.record_audit("host.verdict", "h1", "monitor", detail)
    [event] = fresh_db.audit_events("h1")
    assert event.detail == {"phi": None, "gap": [1.5, None], "peer": {"s": None}}


def test_bad_url_and_unreachable_database_are_clear_errors() -> None:
    with pytest.raises(StorageError, match="not a database URL"):
        Database("this is not a url")
    db = Database("postgresql+psycopg://nobody:secretpw@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="cannot reach") as info:
        db.migrate()
    assert "secretpw" not in str(info.value)


def test_a_reader_does_not_wait_for_a_writer_in_its_transaction(fresh_db: Database) -> None:
    """API listings read beside the outbox's writes instead of queueing behind them."""
    fresh_db.migrate()
    fresh_db.record_audit("host.state", "host1", "inspector")
    with ThreadPoolExecutor(1) as pool:
        with fresh_db.session() as writing:  # the writers' turn is held until this ends
            writing.execute(text("UPDATE audit_events SET actor = 'someone'"))
            read = pool.submit(fresh_db.audit_events)
            done, _ = wait([read], timeout=5)
        assert done, "the reader waited for the writer's transaction"
    assert [e.actor for e in read.result()] == ["inspector"]  # the last committed state
    assert [e.actor for e in fresh_db.audit_events()] == ["someone"]


def test_a_writer_that_must_not_wait_hears_that_the_database_is_busy(
    fresh_db: Database,
) -> None:
    """SQLite's writers take turns in the process; one that asks not to wait is told
    instead (the outbox then writes from its thread). Other databases have no turn."""
    fresh_db.migrate()
    with ThreadPoolExecutor(1) as pool, fresh_db.session():

        def write_now() -> str:
            try:
                with fresh_db.session(wait=False) as s:
                    s.execute(text("UPDATE audit_events SET actor = 'x'"))
            except WriterBusy:
                return "busy"
            return "written"

        outcome = pool.submit(write_now).result(timeout=10)
    assert outcome == ("busy" if fresh_db.local else "written")
    with fresh_db.session(wait=False):  # free again
        pass


def test_commits_never_checkpoint_and_the_checkpoint_catches_up(fresh_db: Database) -> None:
    """SQLite's WAL is copied back by ``checkpoint`` alone (off the commits on the
    notification path); elsewhere it is a no-op."""
    fresh_db.migrate()
    for i in range(80):  # over 1,500 WAL pages: SQLite alone checkpoints at 1,000
        fresh_db.record_audit("bulk", f"s{i}", "test", {"pad": "x" * 80_000})
    frames, copied = fresh_db.checkpoint()
    if not fresh_db.local:
        assert (frames, copied) == (0, 0)
        return
    assert frames > 1000  # every commit appended, none checkpointed
    assert copied == frames
    with fresh_db.reading() as s:
        assert s.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 80


def test_the_checkpoint_runner_keeps_the_wal_short(fresh_db: Database) -> None:
    """``run_checkpoints`` (as ``medevac serve`` runs it): after a round, the next
    commit starts the WAL afresh instead of appending to 1,000+ frames."""
    fresh_db.migrate()
    for i in range(80):
        fresh_db.record_audit("bulk", f"s{i}", "test", {"pad": "x" * 80_000})

    async def a_few_rounds() -> None:
        runner = asyncio.create_task(fresh_db.run_checkpoints(0.05))
        await asyncio.sleep(0.3)
        runner.cancel()

    asyncio.run(a_few_rounds())
    fresh_db.record_audit("small", "s", "test")
    frames, _ = fresh_db.checkpoint()
    if fresh_db.local:
        assert frames < 50


def test_a_hosts_state_moves_with_its_audit_entry_and_never_over_another_writer(
    fresh_db: Database,
) -> None:
    from medevac.storage.records import HostRow, HostStore

    fresh_db.migrate()
    store = HostStore(fresh_db)
    audit = {"audit_kind": "host.state", "actor": "inspector", "trace_id": "t1"}
    assert store.move(HostRow("h1", "z", "LOST", 10.0, 1), detail={"on": "lost"}, **audit)
    assert store.move(HostRow("h1", "z", "FENCING", 11.0, 2), detail={"on": "fencing"}, **audit)
    # A writer that started from generation 1 (someone moved it since) changes nothing.
    assert not store.move(HostRow("h1", "z", "UP", 12.0, 2), detail={"on": "stale"}, **audit)
    assert not store.move(HostRow("h1", "z", "UP", 12.0, 1), detail={"on": "new"}, **audit)
    [row] = store.all()
    assert (row.state, row.since, row.generation) == ("FENCING", 11.0, 2)
    kinds = [(e.kind, e.detail["on"]) for e in reversed(fresh_db.audit_events("h1"))]
    assert kinds == [("host.state", "lost"), ("host.state", "fencing")]  # none for the refused


def test_deleting_an_alarm_cancels_its_pending_deliveries_for_good(fresh_db: Database) -> None:
    """The alarm's deletion cancels its pending deliveries in the same transaction, and
    an outcome recorded afterwards (an attempt that was under way) does not undo it."""
    from medevac.storage.records import AlarmRow, AlarmStore, DeliveryRow, HistoryRow, OutboxStore

    fresh_db.migrate()
    alarms, outbox = AlarmStore(fresh_db), OutboxStore(fresh_db)
    for alarm_id in ("a1", "a2"):
        row = AlarmRow(alarm_id, "p1", "ok", "", 1.0, 1.0, {})
        alarms.put(row, HistoryRow(f"c-{alarm_id}", alarm_id, "p1", "creation", {}, 1.0))
    rows = [DeliveryRow(f"d{i}", f"a{i % 2 + 1}", "http://c/x", {}, 2.0) for i in range(4)]
    alarms.record_firing((), (), rows)
    outbox.settle([("d0", "delivered", 1, 3.0, None)])  # a1's: d0 delivered, d2 pending
    alarms.delete("a1", HistoryRow("x-a1", "a1", "p1", "deletion", {}, 4.0))
    outbox.settle([("d2", "pending", 2, 5.0, "HTTP 503"), ("d1", "pending", 1, 5.0, "HTTP 503")])
    got = {r.id: r.status for r in outbox.recent(limit=10)}
    assert got == {"d0": "delivered", "d1": "pending", "d2": "cancelled", "d3": "pending"}
    assert sorted(r.id for r in outbox.pending()) == ["d1", "d3"]

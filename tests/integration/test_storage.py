"""Storage: migrations run on SQLite and PostgreSQL, are idempotent and match the models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from medevac.storage import Base, Database, StorageError, WriterBusy
from tests.conftest import POSTGRES_URL, postgres_available


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'm.db'}")
        yield database
        database.dispose()
        return
    if not postgres_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    admin = Database(POSTGRES_URL)
    name = f"medevac_test_{uuid.uuid4().hex[:10]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    yield database
    database.dispose()
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'DROP DATABASE "{name}"'))
    admin.dispose()


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

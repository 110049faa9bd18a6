"""Engine, sessions and migrations for one database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from medevac.storage.models import AuditEvent

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The advisory lock several controllers take in turn to migrate one database.
MIGRATION_LOCK = 0x6D656465766163


class WriterBusy(Exception):
    """Another writer of this process has the database (``session(wait=False)``)."""


class StorageError(Exception):
    """The database is unreachable, misconfigured or at an unknown schema."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (API) run beside the writer; busy_timeout rides out short locks.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    # With WAL, NORMAL is safe against a killed process (only an OS crash can lose the
    # last commits) and saves an fsync per commit on the notification path.
    cur.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints (the WAL copied back into the file, with the fsyncs commits skip) run
    # apart, in ``Database.checkpoint``: left to SQLite, one in every six 100-alarm
    # outbox writes ran one inside its commit and took 8 ms more.
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def redact_url(url: str) -> str:
    """``url`` with the password hidden, even when it is too malformed to parse: what
    stands between the first ``:`` of the user part and the last ``@`` becomes ``***``."""
    at = url.rfind("@")
    if at < 0:
        return url
    slashes = url.find("//")
    start = slashes + 2 if 0 <= slashes < at else url.find(":") + 1
    user, colon, _password = url[start:at].partition(":")
    return url[:start] + user + (":***" if colon else "") + url[at:]


def to_json(value: Any) -> str:
    """JSON as every database takes it: JSON has no Infinity or NaN (PostgreSQL refuses
    them; SQLite would keep them), so such a float is stored as null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Database:
    """One database: ``migrate()`` once at start, then ``session()`` per unit of work."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise StorageError(f"storage.url is not a database URL: {redact_url(url)!r}") from None
        self.url = parsed
        try:
            # Errors never quote a statement's values: they may hold a consumer's URL.
            self.engine: Engine = create_engine(
                parsed, pool_pre_ping=True, hide_parameters=True, json_serializer=to_json
            )
        except NoSuchModuleError:
            raise StorageError(
                f"storage.url names an unknown database driver {parsed.drivername!r}: "
                f"{self.display_url}"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # A local file: a short write costs no round trip, it may run on the event loop.
        self.local = parsed.get_backend_name() == "sqlite"
        # SQLite has one writer: taking turns here is faster than colliding and letting
        # its busy handler sleep (up to tens of ms) on the notification path.
        self._turn: threading.Lock | None = threading.Lock() if self.local else None
        self._own: Any = None  # insert_now's DBAPI connection, opened on first use
        self._inserts: dict[tuple[str, tuple[str, ...]], tuple[str, list[tuple[str, Any]]]] = {}

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return self.url.render_as_string(hide_password=True)

    def _alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent). Several controllers
        starting together on one PostgreSQL database migrate one after the other."""
        try:
            with self._migration_turn():
                command.upgrade(self._alembic_config(), "head")
        except OperationalError as exc:
            raise StorageError(f"cannot reach {self.display_url}: {exc.orig}") from None

    @contextmanager
    def _migration_turn(self) -> Iterator[None]:
        """PostgreSQL: a session advisory lock held while migrating (others wait)."""
        if self.url.get_backend_name() != "postgresql":
            yield
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                yield
            finally:
                c.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    @contextmanager
    def session(self, *, wait: bool = True) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on error.
        ``wait=False``: raise ``WriterBusy`` rather than wait for this process's other
        writers (SQLite's turn; other databases have none to wait for)."""
        with self._writer_turn(wait), self._sessions.begin() as s:
            yield s

    @contextmanager
    def _writer_turn(self, wait: bool) -> Iterator[None]:
        """SQLite's one writer, by turns in this process (other databases: no turn)."""
        if self._turn is not None and not self._turn.acquire(blocking=wait):
            raise WriterBusy
        try:
            yield
        finally:
            if self._turn is not None:
                self._turn.release()

    def checkpoint(self) -> tuple[int, int]:
        """Copy SQLite's WAL back into the database file, without waiting for readers
        or writers; returns (frames in the WAL, frames copied). Other databases: (0, 0).
        Blocking: run it in a thread, every ``checkpoint_interval``."""
        if not self.local:
            return (0, 0)
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return (int(row[1]), int(row[2]))

    async def run_checkpoints(self, interval: float = 1.0) -> None:
        """Checkpoint every ``interval`` s until cancelled (a no-op but for SQLite)."""
        while self.local:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:  # a locked or busy file: the next round catches up
                log.exception("SQLite checkpoint failed; retrying in %.1f s", interval)

    def insert_now(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (all with the same keys) into ``table`` in one transaction, at
        the lowest cost SQLite allows: the statement compiled once by SQLAlchemy, the
        values through its own type processors, executed on a connection kept for
        this. A Session costs three times as much, milliseconds on a busy machine,
        which is the first alarm's budget. Takes the writers' turn without waiting:
        raises ``WriterBusy``. SQLite only."""
        if self._turn is None:
            raise TypeError("insert_now is for SQLite; use session() elsewhere")
        if not rows:
            return
        sql, processors = self._prepared(table, tuple(rows[0]))
        params = [tuple(p(row[k]) if p else row[k] for k, p in processors) for row in rows]
        with self._writer_turn(wait=False):
            if self._own is None:
                self._own = self.engine.raw_connection()
            try:
                self._own.cursor().executemany(sql, params)
                self._own.commit()
            except BaseException:
                own, self._own = self._own, None  # the next call starts on a fresh one
                with contextlib.suppress(Exception):
                    own.rollback()
                    own.close()
                raise

    def _prepared(self, table: Table, keys: tuple[str, ...]) -> tuple[str, list[tuple[str, Any]]]:
        cached = self._inserts.get((table.name, keys))
        if cached is None:
            dialect = self.engine.dialect
            compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
            if compiled.positiontup != list(keys):  # a default SQLAlchemy would fill in
                raise ValueError(f"insert_now on {table.name} needs every column given")
            processors = [(k, table.c[k].type.bind_processor(dialect)) for k in keys]
            cached = self._inserts[(table.name, keys)] = (compiled.string, processors)
        return cached

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only unit of work. It does not take the writers' turn: in WAL mode a
        reader never blocks a writer, and an API listing must not hold up the outbox."""
        with self._sessions() as s:  # closing ends the transaction; nothing is written
            yield s

    def record_audit(
        self,
        kind: str,
        subject: str,
        actor: str,
        detail: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> int:
        """Append one audit event and return its id."""
        with self.session() as s:
            ev = AuditEvent(
                at=datetime.now(UTC),
                kind=kind,
                subject=subject,
                actor=actor,
                trace_id=trace_id,
                detail=detail or {},
            )
            s.add(ev)
            s.flush()
            return ev.id

    def audit_events(
        self, subject: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[AuditEvent]:
        with self.reading() as s:
            q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
            if subject is not None:
                q = q.where(AuditEvent.subject == subject)
            return list(s.scalars(q))

    def dispose(self) -> None:
        if self._own is not None:
            self._own.close()  # back to the pool, closed with it
            self._own = None
        self.engine.dispose()

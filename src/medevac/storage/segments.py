"""Masakari's segments, their hosts and notifications: typed rows in and out.

Every method is one transaction and blocking: callers on the event loop run them in a
thread. Names are unique (segments; hosts across segments), which the database
enforces, so two controllers writing at once cannot both win. ``generation(db)``
rises with every write of segments or hosts made through this process's stores: the
recovery's host groups read again at once after an edit here, and within their cache's
lifetime after one on another controller.
"""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medevac.storage.db import Database
from medevac.storage.models import (
    EvacuationRecord,
    IncidentRecord,
    NotificationRecord,
    RecoveryRecord,
    SegmentHostRecord,
    SegmentRecord,
)

R = TypeVar("R")

_generations: weakref.WeakKeyDictionary[Database, int] = weakref.WeakKeyDictionary()


def generation(db: Database) -> int:
    """How many segment or host writes this process made on ``db``."""
    return _generations.get(db, 0)


def _bump(db: Database) -> None:
    _generations[db] = _generations.get(db, 0) + 1


def utc(value: datetime) -> datetime:
    """``value`` with its zone: SQLite hands datetimes back naive (they are UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def unique_violation(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a uniqueness rule broken (not a NOT NULL or another one), on
    PostgreSQL (SQLSTATE 23505) or SQLite (its extended result code)."""
    orig = exc.orig
    state = getattr(orig, "sqlstate", None)
    if state is not None:
        return bool(state == "23505")
    return getattr(orig, "sqlite_errorcode", None) in SQLITE_UNIQUE


SQLITE_UNIQUE = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})


class Conflict(Exception):
    """A write would break a uniqueness rule (the message says which)."""


class NotFound(Exception):
    """The row to change is not there (any more)."""


@dataclass(frozen=True, slots=True)
class SegmentRow:
    id: int
    uuid: str
    name: str
    description: str | None
    recovery_method: str
    service_type: str
    enabled: bool
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class SegmentHostRow:
    id: int
    uuid: str
    name: str
    segment_uuid: str
    type: str
    control_attributes: str
    reserved: bool
    on_maintenance: bool
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    uuid: str
    type: str
    hostname: str
    source_host_uuid: str
    segment_uuid: str
    generated_time: datetime
    payload: dict[str, Any]
    outcome: str  # accepted | ignored
    message: str | None
    created_at: datetime
    updated_at: datetime | None


def _row(cls: type[R], record: Any) -> R:
    values = {f.name: getattr(record, f.name) for f in fields(cls)}  # type: ignore[arg-type]
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = utc(value)
    return cls(**values)


def columns(cls: Any) -> tuple[str, ...]:
    """The fields of a row type: what a list may be sorted or filtered by."""
    return tuple(f.name for f in fields(cls))


def _where(q: Any, model: Any, filters: Mapping[str, Any]) -> Any:
    for name, value in filters.items():
        if value is not None:
            q = q.where(getattr(model, name) == value)
    return q


class SegmentStore:
    """Segments, hosts and notifications on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- segments -------------------------------------------------------------------

    def segments(self, **filters: Any) -> list[SegmentRow]:
        """Every segment equal to each non-None filter, oldest first."""
        with self.db.reading() as s:
            q = _where(select(SegmentRecord), SegmentRecord, filters).order_by(SegmentRecord.id)
            return [_row(SegmentRow, r) for r in s.scalars(q)]

    def segment(self, segment_uuid: str) -> SegmentRow | None:
        with self.db.reading() as s:
            r = s.scalars(select(SegmentRecord).where(SegmentRecord.uuid == segment_uuid)).first()
            return _row(SegmentRow, r) if r is not None else None

    def add_segment(
        self,
        *,
        name: str,
        recovery_method: str,
        service_type: str,
        description: str | None,
        enabled: bool,
        at: datetime,
    ) -> SegmentRow:
        """A new segment; raises Conflict when its name is taken."""
        record = SegmentRecord(
            uuid=str(uuidlib.uuid4()),
            name=name,
            description=description,
            recovery_method=recovery_method,
            service_type=service_type,
            enabled=enabled,
            created_at=at,
            updated_at=None,
        )
        self._write(lambda s: s.add(record), f"a segment named {name!r} exists")
        return self._segment_or_fail(record.uuid)

    def update_segment(
        self, segment_uuid: str, changes: Mapping[str, Any], at: datetime
    ) -> SegmentRow:
        """Change the given fields; raises NotFound, or Conflict for a taken name."""

        def write(s: Session) -> None:
            record = self._segment_record(s, segment_uuid)
            for name, value in changes.items():
                setattr(record, name, value)
            record.updated_at = at

        taken = f"a segment named {changes.get('name')!r} exists"
        self._write(write, taken)
        return self._segment_or_fail(segment_uuid)

    def delete_segment(self, segment_uuid: str) -> None:
        """Remove a segment with its hosts; raises NotFound."""

        def write(s: Session) -> None:
            s.delete(self._segment_record(s, segment_uuid))
            s.execute(
                delete(SegmentHostRecord).where(SegmentHostRecord.segment_uuid == segment_uuid)
            )

        self._write(write, "")

    # -- hosts ----------------------------------------------------------------------

    def hosts(self, segment_uuid: str | None = None, **filters: Any) -> list[SegmentHostRow]:
        """The hosts of a segment (every host: None), equal to each non-None filter."""
        with self.db.reading() as s:
            q = _where(select(SegmentHostRecord), SegmentHostRecord, filters)
            if segment_uuid is not None:
                q = q.where(SegmentHostRecord.segment_uuid == segment_uuid)
            return [_row(SegmentHostRow, r) for r in s.scalars(q.order_by(SegmentHostRecord.id))]

    def host(self, segment_uuid: str, host_uuid: str) -> SegmentHostRow | None:
        with self.db.reading() as s:
            r = s.scalars(
                select(SegmentHostRecord).where(
                    SegmentHostRecord.uuid == host_uuid,
                    SegmentHostRecord.segment_uuid == segment_uuid,
                )
            ).first()
            return _row(SegmentHostRow, r) if r is not None else None

    def host_named(self, name: str) -> SegmentHostRow | None:
        with self.db.reading() as s:
            r = s.scalars(select(SegmentHostRecord).where(SegmentHostRecord.name == name)).first()
            return _row(SegmentHostRow, r) if r is not None else None

    def add_host(
        self,
        segment_uuid: str,
        *,
        name: str,
        type: str,
        control_attributes: str,
        reserved: bool,
        on_maintenance: bool,
        at: datetime,
    ) -> SegmentHostRow:
        """A new host of a segment; raises NotFound for the segment, Conflict for a
        name some segment already has."""
        record = SegmentHostRecord(
            uuid=str(uuidlib.uuid4()),
            name=name,
            segment_uuid=segment_uuid,
            type=type,
            control_attributes=control_attributes,
            reserved=reserved,
            on_maintenance=on_maintenance,
            created_at=at,
            updated_at=None,
        )

        def write(s: Session) -> None:
            self._segment_record(s, segment_uuid)
            s.add(record)

        self._write(write, f"a host named {name!r} is in a segment already")
        return self._host_or_fail(record.uuid)

    def update_host(
        self, segment_uuid: str, host_uuid: str, changes: Mapping[str, Any], at: datetime
    ) -> SegmentHostRow:
        """Change the given fields; raises NotFound, or Conflict for a taken name."""

        def write(s: Session) -> None:
            record = self._host_record(s, segment_uuid, host_uuid)
            for name, value in changes.items():
                setattr(record, name, value)
            record.updated_at = at

        self._write(write, f"a host named {changes.get('name')!r} is in a segment already")
        return self._host_or_fail(host_uuid)

    def delete_host(self, segment_uuid: str, host_uuid: str) -> None:
        self._write(lambda s: s.delete(self._host_record(s, segment_uuid, host_uuid)), "")

    # -- notifications --------------------------------------------------------------

    def notifications(
        self, *, since: datetime | None = None, **filters: Any
    ) -> list[NotificationRow]:
        """Notifications equal to each non-None filter, generated at ``since`` or later
        (None: all), oldest first."""
        with self.db.reading() as s:
            q = _where(select(NotificationRecord), NotificationRecord, filters)
            if since is not None:
                q = q.where(NotificationRecord.generated_time >= since)
            q = q.order_by(NotificationRecord.id)
            return [_row(NotificationRow, r) for r in s.scalars(q)]

    def notification(self, notification_uuid: str) -> NotificationRow | None:
        with self.db.reading() as s:
            q = select(NotificationRecord).where(NotificationRecord.uuid == notification_uuid)
            r = s.scalars(q).first()
            return _row(NotificationRow, r) if r is not None else None

    def add_notification(
        self,
        *,
        notification_uuid: str,
        type: str,
        host: SegmentHostRow,
        generated_time: datetime,
        payload: dict[str, Any],
        outcome: str,
        message: str | None,
        at: datetime,
        maintenance: bool,
    ) -> NotificationRow:
        """Record a notification; with ``maintenance``, its host goes on maintenance
        (and stops being reserved) in the same transaction, as Masakari does for a
        STOPPED host or process."""
        record = NotificationRecord(
            uuid=notification_uuid,
            type=type,
            hostname=host.name,
            source_host_uuid=host.uuid,
            segment_uuid=host.segment_uuid,
            generated_time=generated_time,
            payload=payload,
            outcome=outcome,
            message=message,
            created_at=at,
            updated_at=None,
        )

        def write(s: Session) -> None:
            s.add(record)
            if maintenance:
                row = s.scalars(
                    select(SegmentHostRecord).where(SegmentHostRecord.uuid == host.uuid)
                ).first()
                if row is not None:
                    row.on_maintenance, row.reserved, row.updated_at = True, False, at

        self._write(write, "")
        found = self.notification(record.uuid)
        assert found is not None
        return found

    # -- what notifications led to --------------------------------------------------

    def incidents_of(self, hosts: Iterable[str], since: datetime) -> list[dict[str, Any]]:
        """The incidents of ``hosts`` open at ``since`` or opened later, oldest first."""
        with self.db.reading() as s:
            q = (
                select(IncidentRecord)
                .where(IncidentRecord.host.in_(sorted(set(hosts))))
                .where((IncidentRecord.closed_at.is_(None)) | (IncidentRecord.closed_at >= since))
                .order_by(IncidentRecord.opened_at)
            )
            return [r.body for r in s.scalars(q)]

    def recoveries_of(self, incident_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Each incident's recoveries, oldest first, each with its ``evacuations``."""
        ids = sorted(set(incident_ids))
        out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if not ids:
            return out
        with self.db.reading() as s:
            q = select(RecoveryRecord).where(RecoveryRecord.incident_id.in_(ids))
            recoveries = list(s.scalars(q.order_by(RecoveryRecord.started_at)))
            evacs: dict[str, list[dict[str, Any]]] = {r.id: [] for r in recoveries}
            if recoveries:
                eq = select(EvacuationRecord).where(EvacuationRecord.recovery_id.in_(list(evacs)))
                for e in s.scalars(eq.order_by(EvacuationRecord.id)):
                    evacs[e.recovery_id].append(
                        {
                            "id": e.id,
                            "server_id": e.server_id,
                            "server_name": e.server_name,
                            "from_host": e.from_host,
                            "to_host": e.to_host,
                            "started_at": utc(e.started_at),
                            "ended_at": utc(e.ended_at) if e.ended_at else None,
                            "result": e.result,
                            "detail": e.detail,
                        }
                    )
            for r in recoveries:
                out[r.incident_id].append(
                    {
                        "id": r.id,
                        "host": r.host,
                        "state": r.state,
                        "started_at": utc(r.started_at),
                        "updated_at": utc(r.updated_at),
                        "ended_at": utc(r.ended_at) if r.ended_at else None,
                        "detail": r.detail,
                        "evacuations": evacs[r.id],
                    }
                )
        return out

    # -- helpers --------------------------------------------------------------------

    def _write(self, write: Any, conflict: str) -> None:
        """Run ``write`` in one transaction; a name taken raises Conflict(conflict), any
        other broken rule its IntegrityError (a bug, never told as a taken name)."""
        try:
            with self.db.session() as s:
                write(s)
        except IntegrityError as exc:
            if not unique_violation(exc):
                raise
            raise Conflict(conflict) from None
        _bump(self.db)

    @staticmethod
    def _segment_record(s: Session, segment_uuid: str) -> SegmentRecord:
        r = s.scalars(select(SegmentRecord).where(SegmentRecord.uuid == segment_uuid)).first()
        if r is None:
            raise NotFound(f"no segment {segment_uuid}")
        return r

    @staticmethod
    def _host_record(s: Session, segment_uuid: str, host_uuid: str) -> SegmentHostRecord:
        r = s.scalars(
            select(SegmentHostRecord).where(
                SegmentHostRecord.uuid == host_uuid,
                SegmentHostRecord.segment_uuid == segment_uuid,
            )
        ).first()
        if r is None:
            raise NotFound(f"no host {host_uuid} in segment {segment_uuid}")
        return r

    def _segment_or_fail(self, segment_uuid: str) -> SegmentRow:
        row = self.segment(segment_uuid)
        if row is None:
            raise NotFound(f"no segment {segment_uuid}")
        return row

    def _host_or_fail(self, host_uuid: str) -> SegmentHostRow:
        with self.db.reading() as s:
            r = s.scalars(
                select(SegmentHostRecord).where(SegmentHostRecord.uuid == host_uuid)
            ).first()
            if r is None:
                raise NotFound(f"no host {host_uuid}")
            return _row(SegmentHostRow, r)


def policies(store: SegmentStore) -> list[tuple[SegmentRow, Sequence[SegmentHostRow]]]:
    """Every segment with its hosts, oldest segment first: what host groups are made of."""
    hosts: dict[str, list[SegmentHostRow]] = {}
    for h in store.hosts():
        hosts.setdefault(h.segment_uuid, []).append(h)
    return [(seg, hosts.get(seg.uuid, [])) for seg in store.segments()]

"""Repositories over the tables: incidents, alarms and their history, the outbox.

Plain dicts in and out, so the blocks above never hold a session. Every method is one
transaction and blocking: callers on the event loop run them in a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medevac.storage.db import Database
from medevac.storage.models import (
    TEXT_LENGTH,
    AlarmChange,
    AlarmRecord,
    AuditEvent,
    Delivery,
    EvacuationRecord,
    HostRecord,
    IncidentRecord,
    RecoveryRecord,
)


def newest(
    model: Any,
    order: Any,
    limit: int | None,
    where: dict[Any, Any] | None = None,
    offset: int = 0,
) -> Select[Any]:
    """``model`` rows, newest first by ``order`` (at most ``limit``, None: all, after
    skipping ``offset``), equal to each non-None filter value."""
    q = select(model).order_by(order.desc()).limit(limit).offset(offset or None)
    for column, value in (where or {}).items():
        if value is not None:
            q = q.where(column == value)
    return q


def bulk_update(
    conn: Any, model: Any, rows: list[dict[str, Any]], *, only: Any = None, **columns: str
) -> None:
    """One executemany UPDATE of ``model`` by primary key ``id`` (each row's ``key``),
    setting each column to the row's value named by ``columns``; ``only``: a further
    condition the rows must meet."""
    if rows:
        values: dict[str, Any] = {column: bindparam(param) for column, param in columns.items()}
        q = update(model).where(model.id == bindparam("key"))
        if only is not None:
            q = q.where(only)
        conn.execute(q.values(**values), rows)


def dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class IncidentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, body: dict[str, Any]) -> None:
        """Insert or update one incident from its ``Incident.as_dict()``."""
        closed = body["state"] == "CLOSED"
        values = {
            "host": body["host"],
            "zone": body["zone"],
            "kind": body["kind"],
            "state": body["state"],
            "open_host": None if closed else body["host"],
            "opened_at": dt(body["opened_at"]),
            "updated_at": dt(body["updated_at"] or body["opened_at"]),
            "closed_at": dt(body["closed_at"]) if body.get("closed_at") else None,
            "trace_id": body["trace_id"],
            "body": body,
        }
        with self.db.session() as s:
            row = s.get(IncidentRecord, body["id"])
            if row is None:
                s.add(IncidentRecord(id=body["id"], **values))
            else:
                for k, v in values.items():
                    setattr(row, k, v)

    def open_incidents(self) -> list[dict[str, Any]]:
        with self.db.reading() as s:
            q = select(IncidentRecord).where(IncidentRecord.open_host.is_not(None))
            return [r.body for r in s.scalars(q)]

    def get(self, incident_id: str) -> dict[str, Any] | None:
        with self.db.reading() as s:
            row = s.get(IncidentRecord, incident_id)
            return row.body if row is not None else None

    def recent(
        self,
        *,
        host: str | None = None,
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        where = {IncidentRecord.host: host, IncidentRecord.state: state}
        with self.db.reading() as s:
            q = newest(IncidentRecord, IncidentRecord.opened_at, limit, where, offset)
            return [r.body for r in s.scalars(q)]


@dataclass(frozen=True, slots=True)
class AlarmRow:
    alarm_id: str
    project_id: str | None
    state: str
    state_reason: str
    state_timestamp: float
    timestamp: float
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HistoryRow:
    event_id: str
    alarm_id: str
    project_id: str | None
    type: str  # creation | rule change | state transition | deletion
    detail: dict[str, Any]
    timestamp: float


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    alarm_id: str
    url: str
    payload: dict[str, Any]
    created_at: float
    trace_id: str | None = None
    attempts: int = 0
    status: str = "pending"
    next_attempt_at: float | None = None
    delivered_at: float | None = None
    last_error: str | None = None
    owner: str | None = None  # the controller sending it (several controllers)


def _alarm_row(r: AlarmRecord) -> AlarmRow:
    return AlarmRow(
        r.id,
        r.project_id,
        r.state,
        r.state_reason,
        ts(r.state_timestamp) or 0.0,
        ts(r.timestamp) or 0.0,
        r.spec,
    )


def _delivery_row(r: Delivery) -> DeliveryRow:
    return DeliveryRow(
        id=r.id,
        alarm_id=r.alarm_id,
        url=r.url,
        payload=r.payload,
        created_at=ts(r.created_at) or 0.0,
        trace_id=r.trace_id,
        attempts=r.attempts,
        status=r.status,
        next_attempt_at=ts(r.next_attempt_at),
        delivered_at=ts(r.delivered_at),
        last_error=r.last_error,
        owner=r.owner,
    )


class AlarmStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> list[AlarmRow]:
        with self.db.reading() as s:
            return [_alarm_row(r) for r in s.scalars(select(AlarmRecord))]

    def versions(self) -> dict[str, tuple[float, float]]:
        """Each alarm's (timestamp, state timestamp): what changed is read in full."""
        q = select(AlarmRecord.id, AlarmRecord.timestamp, AlarmRecord.state_timestamp)
        with self.db.reading() as s:
            return {i: (ts(t) or 0.0, ts(st) or 0.0) for i, t, st in s.execute(q)}

    def some(self, alarm_ids: Iterable[str]) -> list[AlarmRow]:
        q = select(AlarmRecord).where(AlarmRecord.id.in_(list(alarm_ids)))
        with self.db.reading() as s:
            return [_alarm_row(r) for r in s.scalars(q)]

    def put(self, row: AlarmRow, change: HistoryRow) -> None:
        with self.db.session() as s:
            rec = s.get(AlarmRecord, row.alarm_id)
            values = {
                "project_id": row.project_id,
                "state": row.state,
                "state_reason": row.state_reason[:TEXT_LENGTH],
                "state_timestamp": dt(row.state_timestamp),
                "timestamp": dt(row.timestamp),
                "spec": row.spec,
            }
            if rec is None:
                s.add(AlarmRecord(id=row.alarm_id, **values))
            else:
                for k, v in values.items():
                    setattr(rec, k, v)
            s.add(_change(change))

    def delete(self, alarm_id: str, change: HistoryRow) -> None:
        """Delete an alarm, record the deletion, and cancel its pending deliveries."""
        with self.db.session() as s:
            s.execute(delete(AlarmRecord).where(AlarmRecord.id == alarm_id))
            s.execute(
                update(Delivery)
                .where(Delivery.alarm_id == alarm_id, Delivery.status == "pending")
                .values(status="cancelled", last_error="alarm deleted")
            )
            s.add(_change(change))

    def history(
        self, alarm_id: str | None, limit: int | None = 100, *, project_id: str | None = None
    ) -> list[HistoryRow]:
        """An alarm's changes (every alarm's: None), newest first, of one project's
        alarms unless ``project_id`` is None."""
        where = {AlarmChange.alarm_id: alarm_id, AlarmChange.project_id: project_id}
        with self.db.reading() as s:
            q = newest(AlarmChange, AlarmChange.timestamp, limit, where)
            return [
                HistoryRow(
                    c.event_id, c.alarm_id, c.project_id, c.type, c.detail, ts(c.timestamp) or 0.0
                )
                for c in s.scalars(q)
            ]

    def record_firing(
        self,
        states: Iterable[tuple[str, str, str, float]],
        changes: Iterable[HistoryRow],
        deliveries: Iterable[DeliveryRow],
    ) -> None:
        """One transaction of what batches of events did: alarm states (id, state,
        reason, at), their history, and the deliveries they owe (the outbox, which
        writes a batch's deliveries first and its alarms' states after; either part
        may be empty). Bulk statements throughout: this is on the notification path."""
        state_rows = [
            {
                "key": alarm_id,
                "state": state,
                "state_reason": reason[:TEXT_LENGTH],
                "state_timestamp": dt(at),
            }
            for alarm_id, state, reason, at in states
        ]
        change_rows = [_change_row(c) for c in changes]
        delivery_rows = _delivery_rows(deliveries)
        with self.db.session() as s:
            conn = s.connection()
            bulk_update(
                conn,
                AlarmRecord,
                state_rows,
                state="state",
                state_reason="state_reason",
                state_timestamp="state_timestamp",
            )
            if change_rows:
                conn.execute(insert(AlarmChange), change_rows)
            if delivery_rows:
                conn.execute(insert(Delivery), delivery_rows)

    def record_deliveries_now(self, deliveries: Iterable[DeliveryRow]) -> None:
        """Only deliveries, in the cheapest write there is (``Database.insert_now``):
        a burst's first webhooks, whose alarms' states follow in a later write.
        SQLite only; raises ``WriterBusy`` rather than wait for another writer."""
        self.db.insert_now(cast(Table, Delivery.__table__), _delivery_rows(deliveries))


def _delivery_rows(deliveries: Iterable[DeliveryRow]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "alarm_id": d.alarm_id,
            "url": d.url,
            "payload": d.payload,
            "status": "pending",
            "attempts": 0,
            "created_at": dt(d.created_at),
            "next_attempt_at": dt(d.created_at),
            "trace_id": d.trace_id,
            "owner": d.owner,
        }
        for d in deliveries
    ]


def _change_row(c: HistoryRow) -> dict[str, Any]:
    return {
        "event_id": c.event_id,
        "alarm_id": c.alarm_id,
        "project_id": c.project_id,
        "type": c.type,
        "detail": c.detail,
        "timestamp": dt(c.timestamp),
    }


def _change(c: HistoryRow) -> AlarmChange:
    return AlarmChange(
        event_id=c.event_id,
        alarm_id=c.alarm_id,
        project_id=c.project_id,
        type=c.type,
        detail=c.detail,
        timestamp=dt(c.timestamp),
    )


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def pending(self, owner: str | None = None) -> list[DeliveryRow]:
        """The deliveries still to send; ``owner``: only that controller's."""
        q = select(Delivery).where(Delivery.status == "pending")
        if owner is not None:
            q = q.where(Delivery.owner == owner)
        with self.db.reading() as s:
            return [_delivery_row(r) for r in s.scalars(q.order_by(Delivery.created_at))]

    def orphans(self, live: Iterable[str]) -> list[DeliveryRow]:
        """Pending deliveries whose controller is not among the ``live`` ones (or that
        no controller was named for: made by a single controller before)."""
        q = select(Delivery).where(
            Delivery.status == "pending",
            or_(Delivery.owner.is_(None), Delivery.owner.not_in(list(live))),
        )
        with self.db.reading() as s:
            return [_delivery_row(r) for r in s.scalars(q.order_by(Delivery.created_at))]

    def adopt(self, rows: Iterable[DeliveryRow], owner: str) -> list[DeliveryRow]:
        """Make ``owner`` the sender of ``rows``, each only if still pending under the
        controller it was read under (another survivor may have taken it): returns the
        ones taken."""
        taken = []
        with self.db.session() as s:
            for row in rows:
                done = s.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == row.id,
                        Delivery.status == "pending",
                        Delivery.owner.is_(None)
                        if row.owner is None
                        else Delivery.owner == row.owner,
                    )
                    .values(owner=owner)
                )
                if cast(Any, done).rowcount == 1:
                    taken.append(replace(row, owner=owner))
        return taken

    def settle(self, outcomes: Iterable[tuple[str, str, int, float, str | None]]) -> None:
        """Record attempts: (id, status, attempts, at, error); ``at`` is the delivery time
        when delivered, else the next attempt's time. Two bulk statements at most. A
        delivery cancelled meanwhile (its alarm deleted) stays cancelled."""
        delivered, retried = [], []
        for delivery_id, status, attempts, at, error in outcomes:
            row = {"key": delivery_id, "status": status, "attempts": attempts, "at": dt(at)}
            if status == "delivered":
                delivered.append(row)
            else:
                retried.append({**row, "error": (error or "")[:TEXT_LENGTH]})
        with self.db.session() as s:
            conn = s.connection()
            common = {"status": "status", "attempts": "attempts"}
            live = Delivery.status != "cancelled"
            bulk_update(conn, Delivery, delivered, only=live, **common, delivered_at="at")
            bulk_update(
                conn,
                Delivery,
                retried,
                only=live,
                **common,
                next_attempt_at="at",
                last_error="error",
            )

    def recent(self, *, alarm_id: str | None = None, limit: int = 100) -> list[DeliveryRow]:
        with self.db.reading() as s:
            q = newest(Delivery, Delivery.created_at, limit, {Delivery.alarm_id: alarm_id})
            return [_delivery_row(r) for r in s.scalars(q)]

    def counts(self) -> dict[str, int]:
        with self.db.reading() as s:
            rows = s.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
            return {status: int(n) for status, n in rows}


def _recovery_dict(r: RecoveryRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "incident_id": r.incident_id,
        "host": r.host,
        "level": r.level,
        "state": r.state,
        "started_at": ts(r.started_at),
        "updated_at": ts(r.updated_at),
        "ended_at": ts(r.ended_at),
        "detail": r.detail,
    }


def _evacuation_dict(e: EvacuationRecord) -> dict[str, Any]:
    return {
        "recovery_id": e.recovery_id,
        "server_id": e.server_id,
        "server_name": e.server_name,
        "from_host": e.from_host,
        "to_host": e.to_host,
        "started_at": ts(e.started_at),
        "ended_at": ts(e.ended_at),
        "result": e.result,
        "attempts": e.attempts,
        "detail": e.detail,
    }


class RecoveryStore:
    """Recoveries and the evacuation history. Writes are idempotent upserts: a
    workflow step that runs again after a crash writes the same row again."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self,
        recovery_id: str,
        incident_id: str,
        host: str,
        level: int,
        state: str,
        at: float,
        detail: dict[str, Any],
        ended: bool = False,
        fence: Fence | None = None,
    ) -> None:
        """Record a recovery's state; under ``fence``, only while it holds."""

        def write(s: Session) -> None:
            row = s.get(RecoveryRecord, recovery_id)
            if row is None:
                row = RecoveryRecord(
                    id=recovery_id,
                    incident_id=incident_id,
                    host=host,
                    level=level,
                    started_at=dt(at),
                )
                s.add(row)
            row.state = state
            row.updated_at = dt(at)
            row.detail = {**(row.detail or {}), **detail}
            if ended:
                row.ended_at = dt(at)

        fenced_write(self.db, fence, write)

    def put_evacuation(
        self,
        recovery_id: str,
        server_id: str,
        server_name: str,
        from_host: str,
        *,
        result: str,
        at: float,
        to_host: str | None = None,
        attempts: int = 0,
        detail: dict[str, Any] | None = None,
        ended: bool = False,
        fence: Fence | None = None,
    ) -> None:
        """Record a server's evacuation; under ``fence``, only while it holds."""

        def write(s: Session) -> None:
            row = s.scalars(
                select(EvacuationRecord).where(
                    EvacuationRecord.recovery_id == recovery_id,
                    EvacuationRecord.server_id == server_id,
                )
            ).first()
            if row is None:
                row = EvacuationRecord(
                    recovery_id=recovery_id,
                    server_id=server_id,
                    server_name=server_name,
                    from_host=from_host,
                    started_at=dt(at),
                    detail={},
                )
                s.add(row)
            row.result = result
            row.attempts = attempts
            row.to_host = to_host or row.to_host
            row.detail = {**(row.detail or {}), **(detail or {})}
            if ended:
                row.ended_at = dt(at)

        fenced_write(self.db, fence, write)

    def get(self, recovery_id: str) -> dict[str, Any] | None:
        with self.db.reading() as s:
            row = s.get(RecoveryRecord, recovery_id)
            if row is None:
                return None
            body = _recovery_dict(row)
            evacs = s.scalars(
                select(EvacuationRecord)
                .where(EvacuationRecord.recovery_id == recovery_id)
                .order_by(EvacuationRecord.id)
            )
            body["evacuations"] = [_evacuation_dict(e) for e in evacs]
            return body

    def recent(
        self, *, host: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        with self.db.reading() as s:
            where = {RecoveryRecord.host: host}
            q = newest(RecoveryRecord, RecoveryRecord.started_at, limit, where, offset)
            return [_recovery_dict(r) for r in s.scalars(q)]

    def history(
        self,
        *,
        server_id: str | None = None,
        host: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        where = {EvacuationRecord.server_id: server_id, EvacuationRecord.from_host: host}
        with self.db.reading() as s:
            q = newest(EvacuationRecord, EvacuationRecord.started_at, limit, where, offset)
            return [_evacuation_dict(e) for e in s.scalars(q)]


@dataclass(frozen=True, slots=True)
class HostRow:
    name: str
    zone: str
    state: str
    since: float
    generation: int
    owner: str | None = None
    epoch: int = 0


def _host_row(r: HostRecord) -> HostRow:
    since = ts(r.state_since) or 0.0
    return HostRow(r.name, r.zone, r.state, since, r.generation, r.owner, r.epoch)


class StaleOwner(Exception):
    """An effect on a host by a controller that no longer holds its current epoch."""

    def __init__(self, host: str, owner: str, epoch: int, current: tuple[str | None, int]):
        self.host, self.owner, self.epoch, self.current = host, owner, epoch, current
        held_by, held_at = current
        super().__init__(
            f"{owner} no longer owns {host} (its epoch {epoch}; now {held_by} at {held_at})"
        )


@dataclass(frozen=True)
class Fence:
    """A fencing token for one effect: ``owner`` does ``effect`` on ``host`` only while
    ``epoch`` is still the host's current one, checked in the transaction that records
    it."""

    host: str
    owner: str
    epoch: int
    effect: str
    detail: dict[str, Any]
    trace_id: str | None
    at: float


def fenced_write(db: Database, fence: Fence | None, write: Callable[[Session], None]) -> None:
    """``write`` in one transaction with ``fence``'s check and its audit entry (the
    host row locked, so an epoch cannot change between the check and the write).
    Raises StaleOwner, with the refusal audited and nothing written, when the fence
    does not hold. ``fence`` None: one controller, nothing to check."""
    with db.session() as s:
        current: tuple[str | None, int] | None = None
        if fence is not None:
            row = s.get(HostRecord, fence.host, with_for_update=True)
            held = (row.owner, row.epoch) if row is not None else (None, 0)
            ok = held == (fence.owner, fence.epoch)
            refusal = {"refused": fence.effect, "owner_now": held[0], "epoch_now": held[1]}
            s.add(
                AuditEvent(
                    at=dt(fence.at),
                    kind=f"host.{fence.effect}" if ok else "host.stale_owner",
                    subject=fence.host,
                    actor=fence.owner,
                    trace_id=fence.trace_id,
                    detail={"epoch": fence.epoch, **fence.detail} | ({} if ok else refusal),
                )
            )
            current = None if ok else held
        if current is None:
            write(s)
    if current is not None:
        assert fence is not None
        raise StaleOwner(fence.host, fence.owner, fence.epoch, current)


class HostStore:
    """Each host's lifecycle state. A move names the generation it started from and,
    in the same transaction, appends its audit entry: a row another writer changed
    meanwhile is never overwritten, and no transition is recorded without its entry."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> list[HostRow]:
        with self.db.reading() as s:
            return [_host_row(r) for r in s.scalars(select(HostRecord))]

    def get(self, name: str) -> HostRow | None:
        with self.db.reading() as s:
            row = s.get(HostRecord, name)
            return _host_row(row) if row is not None else None

    def move(
        self,
        row: HostRow,
        *,
        audit_kind: str,
        actor: str,
        detail: dict[str, Any],
        trace_id: str | None,
    ) -> bool:
        """Write ``row`` (its generation one above the stored one, or 1 for a new host);
        False when the stored generation is not the one it started from."""
        with self.db.session() as s:
            if row.generation == 1 and s.get(HostRecord, row.name) is None:
                s.add(
                    HostRecord(
                        name=row.name,
                        zone=row.zone,
                        state=row.state,
                        state_since=dt(row.since),
                        generation=1,
                    )
                )
            else:  # a row a claim made has generation 0: its first state updates it
                done = s.execute(
                    update(HostRecord)
                    .where(
                        HostRecord.name == row.name,
                        HostRecord.generation == row.generation - 1,
                    )
                    .values(state=row.state, state_since=dt(row.since), generation=row.generation)
                )
                if cast(Any, done).rowcount != 1:
                    return False
            s.add(
                AuditEvent(
                    at=dt(row.since),
                    kind=audit_kind,
                    subject=row.name,
                    actor=actor,
                    trace_id=trace_id,
                    detail=detail,
                )
            )
            return True

    def epochs_of(self, owner: str) -> dict[str, int]:
        """The hosts the store says ``owner`` owns, with their epochs."""
        q = select(HostRecord.name, HostRecord.epoch).where(HostRecord.owner == owner)
        with self.db.reading() as s:
            return {name: epoch for name, epoch in s.execute(q)}

    def claim(self, name: str, zone: str, owner: str, at: float) -> int:
        """Make ``owner`` the owner of ``name`` under a new epoch (one above the stored
        one), recorded with its audit entry; returns the new epoch."""
        return self.claim_many({name: zone}, owner, at)[name]

    def claim_many(
        self, hosts: dict[str, str], owner: str, at: float, chunk: int = 500
    ) -> dict[str, int]:
        """``claim`` for many hosts (name -> zone), a few hundred per transaction, their
        rows locked in name order (two claimers never deadlock); returns the epochs."""
        epochs: dict[str, int] = {}
        names = sorted(hosts)
        for i in range(0, len(names), chunk):
            part = names[i : i + chunk]
            try:
                epochs |= self._claim_chunk(part, hosts, owner, at)
            except IntegrityError:  # another claimer made a missing row first: again
                epochs |= self._claim_chunk(part, hosts, owner, at)
        return epochs

    def _claim_chunk(
        self, names: list[str], hosts: dict[str, str], owner: str, at: float
    ) -> dict[str, int]:
        with self.db.session() as s:
            q = (
                select(HostRecord)
                .where(HostRecord.name.in_(names))
                .order_by(HostRecord.name)
                .with_for_update()
            )
            rows = {r.name: r for r in s.scalars(q)}
            epochs = {}
            for name in names:
                row = rows.get(name)
                if row is None:
                    row = HostRecord(
                        name=name,
                        zone=hosts[name],
                        state="UP",
                        state_since=dt(at),
                        generation=0,
                        epoch=0,
                    )
                    s.add(row)
                before = row.owner
                row.owner, row.epoch = owner, (row.epoch or 0) + 1
                epochs[name] = row.epoch
                s.add(
                    AuditEvent(
                        at=dt(at),
                        kind="host.owner",
                        subject=name,
                        actor=owner,
                        trace_id=None,
                        detail={"from": before, "to": owner, "epoch": row.epoch},
                    )
                )
            return epochs

    def record_effect(self, fence: Fence) -> None:
        """Record that ``fence.owner`` does ``fence.effect`` on its host under its epoch;
        raises StaleOwner (and records the refusal instead) when the epoch is not the
        host's current one any more."""
        fenced_write(self.db, fence, lambda s: None)

"""Retention: each kind's expired records purged in batches, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import func, select, update

from medevac.storage import Database
from medevac.storage.models import AlarmChange, AuditEvent, Delivery, IncidentRecord
from medevac.storage.records import AlarmStore, DeliveryRow, HistoryRow, IncidentStore, OutboxStore
from medevac.storage.retention import RetentionPolicy, purge
from medevac.storage.segments import SegmentStore

DAY = 86400.0
NOW = time.time()


def incident(n: int, *, closed_days_ago: float | None, opened_days_ago: float) -> dict[str, object]:
    opened = NOW - opened_days_ago * DAY
    closed = None if closed_days_ago is None else NOW - closed_days_ago * DAY
    return {
        "id": f"i{n}",
        "host": f"h{n}",
        "zone": "nova",
        "kind": "HOST_DOWN",
        "state": "OPEN" if closed is None else "CLOSED",
        "opened_at": opened,
        "updated_at": closed or opened,
        "closed_at": closed,
        "trace_id": f"t{n}",
    }


def backdate_audit(db: Database, entry: int, days: float) -> None:
    with db.session() as s:
        at = datetime.fromtimestamp(NOW - days * DAY, UTC)
        s.execute(update(AuditEvent).where(AuditEvent.id == entry).values(at=at))


def count(db: Database, model: type) -> int:
    with db.reading() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_each_kind_is_purged_after_its_bound_in_batches_and_only_when_over(
    fresh_db: Database,
) -> None:
    db = fresh_db
    db.migrate()
    outbox = OutboxStore(db)
    alarms = AlarmStore(db)
    # Deliveries: 5 done 8 days ago (expired), 1 done yesterday, 1 pending for 30 days.
    rows = [DeliveryRow(f"old{i}", "a1", "http://c/x", {}, NOW - 8 * DAY) for i in range(5)]
    rows += [
        DeliveryRow("recent", "a1", "http://c/x", {}, NOW - DAY),
        DeliveryRow("stuck", "a1", "http://c/x", {}, NOW - 30 * DAY),
    ]
    alarms.record_firing((), (), rows)
    done = [
        (f"old{i}", ("delivered", "failed", "cancelled")[i % 3], 1, NOW, None) for i in range(5)
    ]
    outbox.settle([*done, ("recent", "delivered", 1, NOW, None)])
    # Incidents: closed 100 days ago (expired), closed 10 days ago, open for 200 days.
    incidents = IncidentStore(db)
    incidents.save(incident(1, closed_days_ago=100, opened_days_ago=101))
    incidents.save(incident(2, closed_days_ago=10, opened_days_ago=101))
    incidents.save(incident(3, closed_days_ago=None, opened_days_ago=200))
    # Alarm history: 400 days old (expired), and from today.
    for n, days in [(1, 400), (2, 0)]:
        change = HistoryRow(f"e{n}", "a1", "p1", "creation", {}, NOW - days * DAY)
        alarms.record_firing((), [change], ())
    # Audit: verdicts 40 days old (expired) and 1 day old; other entries 40 and 400 days.
    for kind, days in [("verdict.host_down", 40)] * 3 + [("verdict.host_down", 1)]:
        backdate_audit(db, db.record_audit(kind, "h1", "monitor"), days)
    for kind, days in [("host.released", 40), ("host.released", 400)]:
        backdate_audit(db, db.record_audit(kind, "h1", "ops"), days)

    # Masakari notifications: with the incidents, from their arrival (100 and 10 days).
    segments = SegmentStore(db)
    seg = segments.add_segment(
        name="s", recovery_method="auto", service_type="C", description=None, enabled=True,
        at=datetime.fromtimestamp(NOW, UTC),
    )  # fmt: skip
    host = segments.add_host(
        seg.uuid, name="h1", type="C", control_attributes="x", reserved=False,
        on_maintenance=False, at=datetime.fromtimestamp(NOW, UTC),
    )  # fmt: skip
    for days in (100, 10):
        at = datetime.fromtimestamp(NOW - days * DAY, UTC)
        segments.add_notification(
            notification_uuid=f"n{days}", type="VM", host=host, generated_time=at, payload={},
            outcome="accepted", message=None, at=at, maintenance=False,
        )  # fmt: skip

    deleted = asyncio.run(purge(db, RetentionPolicy(batch=2, pause=0.0), now=lambda: NOW))

    assert deleted == {
        "deliveries": 5,
        "verdicts": 3,
        "notifications": 1,
        "incidents": 1,
        "alarm_history": 1,
        "audit": 1,
    }
    assert [n.uuid for n in segments.notifications()] == ["n10"]
    assert {r.id for r in outbox.recent(limit=100)} == {"recent", "stuck"}
    assert [r.id for r in outbox.pending()] == ["stuck"]
    assert sorted(b["id"] for b in incidents.recent()) == ["i2", "i3"]
    assert [h.event_id for h in alarms.history(None, None)] == ["e2"]
    assert sorted((e.kind, e.actor) for e in db.audit_events()) == [
        ("host.released", "ops"),
        ("verdict.host_down", "monitor"),
    ]
    # A second pass finds nothing more; a bound of 0 keeps a kind forever.
    forever = RetentionPolicy(audit_days=0, alarm_history_days=0)
    assert asyncio.run(purge(db, forever, now=lambda: NOW + 1000 * DAY)) == {
        "deliveries": 1,
        "verdicts": 1,
        "notifications": 1,
        "incidents": 1,
    }
    assert count(db, AlarmChange) == 1 and count(db, AuditEvent) == 1
    assert count(db, Delivery) == 1 and count(db, IncidentRecord) == 1  # pending, open

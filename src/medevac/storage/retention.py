"""Retention: finished records older than their kind's bound, deleted in small batches.

Each batch is one short transaction (``DELETE ... WHERE key IN (SELECT key ... LIMIT
n)``, the same on SQLite and PostgreSQL) run in a thread, with a pause between two:
the event loop never waits for a purge, and the outbox's writes get the database
between batches. Only what is over is purged: pending deliveries and open incidents
are kept whatever their age.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, select

from medevac.storage.db import Database
from medevac.storage.models import (
    AlarmChange,
    AuditEvent,
    Delivery,
    IncidentRecord,
    NotificationRecord,
)

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of record is kept, in days (0: forever)."""

    deliveries_days: float = 7.0
    verdicts_days: float = 30.0
    incidents_days: float = 90.0
    alarm_history_days: float = 365.0
    audit_days: float = 365.0
    batch: int = 500
    pause: float = 0.1

    def days(self) -> dict[str, float]:
        """Each kind's bound, in the order purged."""
        return {
            "deliveries": self.deliveries_days,
            "verdicts": self.verdicts_days,
            # Masakari's notifications go with the incidents their status derives from.
            "notifications": self.incidents_days,
            "incidents": self.incidents_days,
            "alarm_history": self.alarm_history_days,
            "audit": self.audit_days,
        }


def expired(kind: str, cutoff: datetime) -> tuple[Any, ColumnElement[bool]]:
    """A kind's key column and the condition its rows older than ``cutoff`` meet."""
    verdict = AuditEvent.kind.like("verdict.%")
    if kind == "deliveries":
        done = Delivery.status.in_(("delivered", "failed", "cancelled"))
        return Delivery.id, done & (Delivery.created_at < cutoff)
    if kind == "verdicts":
        return AuditEvent.id, verdict & (AuditEvent.at < cutoff)
    if kind == "notifications":
        # A notification's incident was open when it came, or opened soon after: one
        # closed before the cutoff goes with every notification it answered.
        return NotificationRecord.id, NotificationRecord.created_at < cutoff
    if kind == "incidents":
        closed = IncidentRecord.closed_at
        return IncidentRecord.id, closed.is_not(None) & (closed < cutoff)
    if kind == "alarm_history":
        return AlarmChange.event_id, AlarmChange.timestamp < cutoff
    if kind == "audit":
        return AuditEvent.id, ~verdict & (AuditEvent.at < cutoff)
    raise ValueError(f"unknown kind {kind!r}")


def purge_batch(db: Database, key: Any, condition: ColumnElement[bool], limit: int) -> int:
    """Delete at most ``limit`` expired rows in one transaction; returns how many.
    Blocking: run it in a thread."""
    table = key.class_
    chosen = select(key).where(condition).limit(limit)
    with db.session() as s:
        result = s.execute(delete(table).where(key.in_(chosen.scalar_subquery())))
        return int(getattr(result, "rowcount", 0) or 0)


async def purge(
    db: Database, policy: RetentionPolicy, *, now: Callable[[], float] = time.time
) -> dict[str, int]:
    """One pass over every kind with a bound; returns the rows deleted by kind."""
    at = now()
    deleted: dict[str, int] = {}
    for kind, days in policy.days().items():
        if days <= 0:
            continue  # kept forever
        key, condition = expired(kind, datetime.fromtimestamp(at - days * DAY, UTC))
        total = 0
        while True:
            n = await asyncio.to_thread(purge_batch, db, key, condition, policy.batch)
            total += n
            if n < policy.batch:
                break
            await asyncio.sleep(policy.pause)
        deleted[kind] = total
    return deleted


async def run_retention(db: Database, policy: RetentionPolicy, interval: float) -> None:
    """Purge now, then every ``interval`` s, until cancelled; a failed pass is retried
    at the next."""
    while True:
        try:
            deleted = await purge(db, policy)
        except Exception:
            log.exception("retention purge failed; trying again in %.0f s", interval)
        else:
            if any(deleted.values()):
                log.info(
                    "retention purge deleted %s",
                    ", ".join(f"{n} {kind}" for kind, n in deleted.items() if n),
                )
        await asyncio.sleep(interval)

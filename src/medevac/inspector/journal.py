"""Persists incidents off the event loop, coalescing bursts of changes into one write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from medevac.changes import INCIDENTS, ChangeFeed
from medevac.inspector.incidents import Incident
from medevac.storage.records import IncidentStore

log = logging.getLogger(__name__)


class IncidentJournal:
    """``save`` marks an incident dirty; one writer task writes the latest snapshots."""

    def __init__(
        self,
        store: IncidentStore,
        coalesce: float = 0.05,
        on_conflict: Callable[[dict[str, Any]], None] | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        self.store = store
        # Told once each snapshot is written: a page that reads it again finds it.
        self.changes = changes
        # An incident the store refuses because its host already has another open one
        # (another controller's, with several): never retried, the owner is told.
        self.on_conflict = on_conflict
        self.conflicts = 0
        # Waiting a little before writing batches bursts of changes and leaves the
        # database to the outbox in the milliseconds after a verdict.
        self.coalesce = coalesce
        self._dirty: dict[str, dict[str, Any]] = {}
        self._writing: set[str] = set()  # ids in the batch being written
        self._refused: set[str] = set()  # ids the store refused (conflicts)
        self._hurry = asyncio.Event()  # someone waits on a write: no coalescing wait
        self._written = asyncio.Condition()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def save(self, incident: Incident) -> None:
        self._dirty[incident.id] = incident.as_dict()
        self._idle.clear()
        self._wake.set()

    async def durable(self, incident_id: str) -> bool:
        """Wait until the incident's latest snapshot is in the store (written at once,
        not after the coalescing wait). False: the store refused it (its host has
        another open incident, another controller's). A recovery starts only after
        this: a controller that dies between the two leaves an incident whose recovery
        its host's next owner starts (under the same id), never a recovery without
        its incident, which a new verdict would duplicate."""
        if self._task is None:
            await self.flush()
        else:
            async with self._written:
                while incident_id in self._dirty or incident_id in self._writing:
                    self._hurry.set()
                    self._wake.set()
                    await self._written.wait()
        return incident_id not in self._refused

    async def load_open(self) -> list[Incident]:
        return [Incident.from_dict(b) for b in await asyncio.to_thread(self.store.open_incidents)]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), self.coalesce)
            self._hurry.clear()
            self._wake.clear()
            batch, self._dirty = self._dirty, {}
            self._writing = set(batch)
            try:
                await asyncio.to_thread(self._write, list(batch.values()))
            except Exception:  # keep the snapshots; a newer one for the same id wins
                log.exception("cannot persist %d incidents; will retry", len(batch))
                for key, body in batch.items():
                    self._dirty.setdefault(key, body)
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            finally:
                self._writing = set()
                async with self._written:
                    self._written.notify_all()
            if self.changes is not None:
                for body in batch.values():
                    self.changes.publish(INCIDENTS, body["id"], host=body["host"])
            if not self._dirty:
                self._idle.set()

    def _write(self, bodies: list[dict[str, Any]]) -> None:
        """Each incident in its own transaction. One the store refuses for a conflict
        (its host has another open incident) is dropped, never retried: retrying it
        would hold back every incident written after it. Any other error (the store
        away) is raised, and the batch retried."""
        for body in bodies:
            try:
                self.store.save(body)
            except IntegrityError as exc:
                self.conflicts += 1
                self._refused.add(body["id"])
                log.error(
                    "incident %s of %s not kept: its host has another open incident (%s)",
                    body["id"],
                    body["host"],
                    type(exc.orig).__name__,
                )
                if self.on_conflict is not None:
                    self.on_conflict(body)

    async def flush(self) -> None:
        """Wait until everything saved so far is in the database."""
        if self._task is None:
            self._write(list(self._dirty.values()))
            self._dirty.clear()
            return
        await self._idle.wait()

    async def close(self) -> None:
        await asyncio.wait_for(self.flush(), 10)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

"""Each host's lifecycle in memory, every transition written in order off the loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from medevac.changes import AUDIT, HOSTS, ChangeFeed
from medevac.inspector.lifecycle import Happening, HostLife, HostState, advance
from medevac.storage.records import HostRow, HostStore

log = logging.getLogger(__name__)


class HostStates:
    """``happen`` moves a host at once in memory; one writer task persists the moves in
    the order they happened (each with its audit entry), retrying while the store is
    away, so none is lost or reordered."""

    def __init__(
        self,
        store: HostStore | None = None,
        clock: Callable[[], float] = time.time,
        changes: ChangeFeed | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.changes = changes
        self._lives: dict[str, HostLife] = {}
        self._queue: asyncio.Queue[tuple[HostRow, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.conflicts = 0

    async def load(self) -> None:
        """The states the store holds (a restarted controller goes on from them)."""
        if self.store is None:
            return
        for row in await asyncio.to_thread(self.store.all):
            self._lives[row.name] = HostLife(HostState(row.state), row.since, row.generation)

    async def reload(self, hosts: set[str]) -> None:
        """These hosts' states as the store holds them now: a host this controller just
        gained was moved by its previous owner meanwhile (under maintenance, lost), so
        what memory kept of it from this controller's start is stale."""
        if self.store is None or not hosts:
            return
        store = self.store
        rows = await asyncio.to_thread(lambda: [store.get(h) for h in sorted(hosts)])
        for row in rows:
            if row is None:
                continue
            was = self.life(row.name)
            self._lives[row.name] = HostLife(HostState(row.state), row.since, row.generation)
            if self.changes is not None and was.state.value != row.state:
                self.changes.publish(HOSTS, row.name, lifecycle=row.state)

    def life(self, host: str) -> HostLife:
        return self._lives.get(host, HostLife())

    def happen(
        self,
        host: str,
        zone: str,
        happening: Happening,
        trace_id: str | None,
        detail: dict[str, Any] | None = None,
    ) -> HostState | None:
        """Move ``host`` as ``happening`` says; returns its new state, or None when the
        happening does not apply in its current state (it then stays there)."""
        life = self.life(host)
        to = advance(life.state, happening)
        if to is None:
            log.debug("%s: %s does not apply in %s", host, happening, life.state)
            return None
        now = self.clock()
        moved = HostLife(to, now, life.generation + 1)
        self._lives[host] = moved
        if self.changes is not None:
            self.changes.publish(HOSTS, host, lifecycle=to.value)
        if self.store is not None:
            row = HostRow(host, zone, to.value, now, moved.generation)
            entry = {
                "audit_kind": "host.state",
                "actor": "inspector",
                "detail": {"from": life.state.value, "to": to.value, "on": happening.value}
                | (detail or {}),
                "trace_id": trace_id,
            }
            self._queue.put_nowait((row, entry))
        return to

    def view(self) -> dict[str, dict[str, Any]]:
        return {
            h: {"state": life.state.value, "since": life.since} for h, life in self._lives.items()
        }

    def counts(self) -> Counter[HostState]:
        """How many hosts are in each state (hosts never moved are UP and not counted)."""
        return Counter(life.state for life in self._lives.values())

    def start(self) -> None:
        if self.store is not None:
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        assert self.store is not None
        while True:
            row, entry = await self._queue.get()
            delay = 0.1
            while True:
                try:
                    ok = await asyncio.to_thread(self.store.move, row, **entry)
                    break
                except Exception as exc:  # the store away: retry, in order, never drop
                    log.error("cannot write %s's state %s (%s); retrying", row.name, row.state, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            if ok and self.changes is not None:
                self.changes.publish(AUDIT, row.name)
            if not ok:
                # Another writer moved the row: its state stands; ours goes on from it.
                self.conflicts += 1
                log.error("%s's stored state changed meanwhile; taking it", row.name)
                stored = await asyncio.to_thread(self.store.get, row.name)
                if stored is not None:
                    life = HostLife(HostState(stored.state), stored.since, stored.generation)
                    self._lives[row.name] = life
            self._queue.task_done()

    async def flush(self) -> None:
        """Wait until every move so far is written (tests, shutdown)."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        await asyncio.wait_for(self.flush(), 10)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

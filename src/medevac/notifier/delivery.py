"""At-least-once webhook delivery from a durable outbox.

A batch of deliveries is written to the database first (one transaction), then each
is POSTed on its own task, so a slow or dead consumer never delays another. Failures
are retried with exponential backoff up to a time bound; every delivery keeps one id
for its life (``X-Medevac-Delivery-Id`` and ``x-openstack-request-id``), so a
consumer can drop the duplicates at-least-once implies. On start, whatever is still
pending in the outbox is sent again: a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from medevac.storage.records import AlarmStore, DeliveryRow, HistoryRow, OutboxStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 5.0  # one POST
    retry_initial: float = 0.5
    retry_max_interval: float = 10.0  # a consumer back from an outage waits at most this
    retry_for: float = 3600.0  # then the delivery is marked failed
    connections_per_consumer: int = 32
    settle_interval: float = 0.05  # outcomes are written in batches


class Outbox:
    def __init__(
        self,
        alarms: AlarmStore,
        store: OutboxStore,
        settings: DeliverySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_delivered: Callable[[DeliveryRow, float], None] | None = None,
    ) -> None:
        self.alarms = alarms
        self.store = store
        self.settings = settings or DeliverySettings()
        self.clock = clock
        self.on_delivered = on_delivered
        self.counters: Counter[str] = Counter()
        self.failing: Counter[str] = Counter()  # consumer origin -> failed attempts
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._settled: list[tuple[str, str, int, float, str | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writes = asyncio.Lock()

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> int:
        """Resume every delivery still pending in the outbox; returns how many."""
        pending = await asyncio.to_thread(self.store.pending)
        for row in pending:
            self._spawn(self._deliver(row))
        self._flusher = asyncio.create_task(self._flush_loop())
        return len(pending)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()
        for client in self._clients.values():
            await client.aclose()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- intake -------------------------------------------------------------------

    def submit(
        self,
        states: list[tuple[str, str, str, float]],
        changes: list[HistoryRow],
        deliveries: list[DeliveryRow],
    ) -> None:
        """Persist what a batch of events did, then send its deliveries (non-blocking)."""
        self._spawn(self._persist_then_send(states, changes, deliveries))

    async def _persist_then_send(
        self,
        states: list[tuple[str, str, str, float]],
        changes: list[HistoryRow],
        deliveries: list[DeliveryRow],
    ) -> None:
        async with self._writes:  # batches reach the database in the order they came
            await asyncio.to_thread(self.alarms.record_firing, states, changes, deliveries)
        self.counters["queued"] += len(deliveries)
        for row in deliveries:
            self._spawn(self._deliver(row))

    # -- sending ------------------------------------------------------------------

    def _client(self, url: str) -> httpx.AsyncClient:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(origin)
        if client is None:
            n = self.settings.connections_per_consumer
            client = httpx.AsyncClient(
                timeout=self.settings.timeout,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                follow_redirects=False,
            )
            self._clients[origin] = client
        return client

    async def _deliver(self, row: DeliveryRow) -> None:
        attempts = row.attempts
        origin = urlsplit(row.url).netloc
        if row.next_attempt_at is not None:
            wait = row.next_attempt_at - self.clock()
            if wait > 0:
                await asyncio.sleep(min(wait, self.settings.retry_max_interval))
        headers = {
            "content-type": "application/json",
            "x-openstack-request-id": f"req-{row.id}",
            "x-medevac-delivery-id": row.id,
        }
        while True:
            attempts += 1
            error: str | None = None
            try:
                resp = await self._client(row.url).post(row.url, json=row.payload, headers=headers)
                if resp.status_code < 300:
                    now = self.clock()
                    self.counters["delivered"] += 1
                    self._settled.append((row.id, "delivered", attempts, now, None))
                    if self.on_delivered is not None:
                        self.on_delivered(row, now)
                    return
                error = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.counters["retried"] += 1
            self.failing[origin] += 1
            now = self.clock()
            if now - row.created_at >= self.settings.retry_for:
                self.counters["failed"] += 1
                log.warning("delivery %s to %s abandoned: %s", row.id, origin, error)
                self._settled.append((row.id, "failed", attempts, now, error))
                return
            delay = min(
                self.settings.retry_max_interval,
                self.settings.retry_initial * 2 ** min(attempts - 1, 30),
            )
            self._settled.append((row.id, "pending", attempts, now + delay, error))
            await asyncio.sleep(delay)

    # -- outcomes -----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.settle_interval)
            await self._flush()

    async def _flush(self) -> None:
        if not self._settled:
            return
        batch, self._settled = self._settled, []
        try:
            async with self._writes:
                await asyncio.to_thread(self.store.settle, batch)
        except Exception:  # the database is away: keep the outcomes for the next flush
            log.exception("cannot record %d delivery outcomes; will retry", len(batch))
            self._settled[:0] = batch

    def stats(self) -> dict[str, Any]:
        return {
            "queued": self.counters["queued"],
            "delivered": self.counters["delivered"],
            "retried": self.counters["retried"],
            "failed": self.counters["failed"],
            "in_flight": len(self._tasks),
            "failing_consumers": dict(self.failing),
        }

"""At-least-once webhook delivery from a durable outbox.

aiohttp sends the webhooks: on two cores it POSTs 100 of them over loopback in about
10 ms where httpx needs 130 to 300 ms (``bench/notify_path.py`` measures the path).

Each batch of deliveries (a slice of the notifier's evaluation, small first) is
written to the database in one transaction, then each is POSTed on its own task, so a
slow or dead consumer never delays another. Failures
are retried with exponential backoff up to a time bound; every delivery keeps one id
for its life (``X-Medevac-Delivery-Id`` and ``x-openstack-request-id``), so a
consumer can drop the duplicates at-least-once implies. On start, whatever is still
pending in the outbox is sent again: a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from medevac.storage.records import AlarmStore, DeliveryRow, HistoryRow, OutboxStore

log = logging.getLogger(__name__)

CheckpointHook = Callable[[str | None, str, float], None]


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 5.0  # one POST
    retry_initial: float = 0.5
    retry_max_interval: float = 10.0  # a consumer back from an outage waits at most this
    retry_for: float = 3600.0  # then the delivery is marked failed
    connections_per_consumer: int = 32
    settle_interval: float = 0.05  # outcomes are written in batches


class _Countdown:
    """How many fresh deliveries still owe one milestone; waitable until none does."""

    def __init__(self) -> None:
        self.owed = 0
        self._none = asyncio.Event()
        self._none.set()

    def add(self, n: int) -> None:
        if n:
            self.owed += n
            self._none.clear()

    def done(self) -> None:
        self.owed = max(0, self.owed - 1)
        if not self.owed:
            self._none.set()

    async def wait(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._none.wait(), within)
        except TimeoutError:
            return False
        return True


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
        # The profiler's marks by trace id: T07 evaluated (the notifier's), T08 fired,
        # T09 received (the consumer's 2xx).
        self.on_checkpoint: CheckpointHook | None = None
        self.counters: Counter[str] = Counter()
        self.failing: Counter[str] = Counter()  # consumer origin -> failed attempts
        self._clients: dict[str, aiohttp.ClientSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._settled: list[tuple[str, str, int, float, str | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writes = asyncio.Lock()
        # Its own thread for outbox writes: never queued behind BMC reads or other
        # work in the loop's default executor.
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._tls: ssl.SSLContext | None = None
        self._unsent = _Countdown()  # fresh deliveries whose first request is not out
        self._untried = _Countdown()  # fresh deliveries whose first attempt has not ended

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> int:
        """Resume every delivery still pending in the outbox; returns how many."""
        # Loading the CA store costs tens of ms: once here, not on the first alarm.
        self._tls = await asyncio.to_thread(ssl.create_default_context)
        pending = await asyncio.to_thread(self.store.pending)
        for row in pending:
            self._spawn(self._deliver(row, counted=False))
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
            await client.close()
        self._db_thread.shutdown(wait=True)

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
        """Persist what a batch of events did, then send its deliveries (non-blocking).
        Batches reach the database in the order they came."""
        self._unsent.add(len(deliveries))
        self._untried.add(len(deliveries))
        self._spawn(self._persist_then_send(states, changes, deliveries))

    async def _persist_then_send(
        self,
        states: list[tuple[str, str, str, float]],
        changes: list[HistoryRow],
        deliveries: list[DeliveryRow],
    ) -> None:
        try:
            async with self._writes:  # batches reach the database in the order they came
                await asyncio.get_running_loop().run_in_executor(
                    self._db_thread, self.alarms.record_firing, states, changes, deliveries
                )
        except Exception:
            # The database is away: send anyway (better than silence), without the
            # outbox's guarantee across a restart, and say so.
            self.counters["unpersisted"] += len(deliveries)
            log.exception("outbox write failed; sending %d alarms without it", len(deliveries))
        self._send(deliveries)

    def _send(self, deliveries: list[DeliveryRow]) -> None:
        self.counters["queued"] += len(deliveries)
        for row in deliveries:
            self._spawn(self._deliver(row, counted=True))

    # -- sending ------------------------------------------------------------------

    def _client(self, url: str) -> aiohttp.ClientSession:
        """One session (its own connection pool) per consumer: a slow one cannot take
        the connections another needs."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        client = self._clients.get(origin)
        if client is None:
            n = self.settings.connections_per_consumer
            trace = aiohttp.TraceConfig()
            trace.on_request_chunk_sent.append(self._request_sent)
            client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=n, limit_per_host=n, ssl=self._tls or True),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                trace_configs=[trace],
            )
            self._clients[origin] = client
        return client

    async def first_sent(self, within: float) -> bool:
        """Wait (bounded) until every queued delivery's first request is on the wire:
        from then on the consumers work on them whatever this loop does next."""
        return await self._unsent.wait(within)

    async def first_attempts(self, within: float) -> bool:
        """Wait (bounded) until every queued delivery has been tried once: the moment
        the inspector's cloud calls may start without competing with the alarms."""
        return await self._untried.wait(within)

    async def _request_sent(self, _: Any, ctx: Any, __: Any) -> None:
        owes: list[_Countdown] | None = ctx.trace_request_ctx
        if owes and self._unsent in owes:
            owes.remove(self._unsent)
            self._unsent.done()

    async def _deliver(self, row: DeliveryRow, *, counted: bool) -> None:
        """Send until delivered or given up; ``counted``: a fresh delivery, which
        ``first_sent`` and ``first_attempts`` wait for."""
        owes = [self._unsent, self._untried] if counted else []
        try:
            await self._attempts(row, owes)
        finally:
            for countdown in owes:  # cancelled before its first request or attempt ended
                countdown.done()

    async def _attempts(self, row: DeliveryRow, owes: list[_Countdown]) -> None:
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
        body = json.dumps(row.payload).encode()
        while True:
            attempts += 1
            error: str | None = None
            if attempts == 1 and self.on_checkpoint is not None:
                self.on_checkpoint(row.trace_id, "T08", self.clock())
            try:
                async with self._client(row.url).post(
                    row.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    trace_request_ctx=owes,
                ) as resp:
                    await resp.read()
                    status = resp.status
                if status < 300:
                    now = self.clock()
                    self.counters["delivered"] += 1
                    self._settled.append((row.id, "delivered", attempts, now, None))
                    if self.on_delivered is not None:
                        self.on_delivered(row, now)
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(row.trace_id, "T09", now)
                    return
                error = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                while owes:  # the first attempt ended (a refused connection sent nothing)
                    owes.pop().done()
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
                await asyncio.get_running_loop().run_in_executor(
                    self._db_thread, self.store.settle, batch
                )
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

"""At-least-once webhook delivery from a durable outbox.

A batch of deliveries is written to the database first (in growing chunks), then each
is POSTed on its own task, so a slow or dead consumer never delays another. The
alarms' states and history that go with them (their books) are written once those
POSTs have been tried: the consumers' CPU comes before the bookkeeping. Failures
are retried with exponential backoff up to a time bound; every delivery keeps one id
for its life (``X-Medevac-Delivery-Id`` and ``x-openstack-request-id``), so a
consumer can drop the duplicates at-least-once implies. On start, whatever is still
pending in the outbox is sent again: a restart loses nothing. The POSTs themselves
are ``webhooks.WebhookClient``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from medevac.checkpoints import Mark
from medevac.notifier.alarms import ActionTargets
from medevac.notifier.webhooks import Begun, SendError, WebhookClient
from medevac.storage.db import WriterBusy
from medevac.storage.records import AlarmStore, DeliveryRow, HistoryRow, OutboxStore

log = logging.getLogger(__name__)

FIRST_CHUNK = 2
Request = tuple[bytes, dict[str, str]]  # a webhook's body and headers
CheckpointHook = Callable[[str | None, str, float], None]
FailedHook = Callable[["DeliveryRow", str, int, str], None]  # row, consumer, attempts, error
AlarmState = tuple[str, str, float]  # state, reason, since
T = TypeVar("T")


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 5.0  # one POST
    retry_initial: float = 0.5
    retry_max_interval: float = 10.0  # a consumer back from an outage waits at most this
    retry_for: float = 3600.0  # then the delivery is marked failed
    connections_per_consumer: int = 32
    settle_interval: float = 0.05  # outcomes are written in batches
    books_wait: float = 1.0  # the alarms' books wait at most this for the POSTs' first tries
    write_retry_initial: float = 0.05  # an outbox write that failed is tried again after this,
    write_retry_max_interval: float = 2.0  # doubling up to this, until the database answers
    breaker_failures: int = 5  # a consumer's circuit opens after this many failures in a row
    # Where webhooks may go, checked again on each connection's resolved address
    # (None: not checked; the controller always passes notifier.action_*_networks).
    targets: ActionTargets | None = None


def backoff(attempt: int, initial: float, cap: float, rand: Callable[[], float]) -> float:
    """The wait before retry number ``attempt`` (1, 2, ...): exponential from
    ``initial``, capped at ``cap``, with equal jitter (half fixed, half random) so
    that the deliveries a consumer's outage failed together do not retry together."""
    ceiling: float = min(cap, initial * 2 ** min(attempt - 1, 30))
    return ceiling / 2 + rand() * ceiling / 2


def trips_breaker(status: int | None) -> bool:
    """Whether a failed attempt counts against its consumer's circuit: no answer, or
    an answer saying it cannot take requests now (5xx, 408, 429). Any other answer
    shows the consumer is there."""
    return status is None or status >= 500 or status in (408, 429)


@dataclass
class Breaker:
    """One consumer's circuit. Closed: every delivery sends. Open, after
    ``threshold`` failures in a row: deliveries wait and one probe at a time goes out
    (half-open while it is out), with a growing, jittered pause between probes. A
    success closes it, and the waiting deliveries go."""

    threshold: int
    failures: int = 0  # in a row
    probing: bool = False
    probes_failed: int = 0
    next_probe: float = 0.0  # the loop's time
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "half-open" if self.probing else "open"

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Outbox:
    def __init__(
        self,
        alarms: AlarmStore,
        store: OutboxStore,
        settings: DeliverySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_delivered: Callable[[DeliveryRow, float], None] | None = None,
        on_checkpoint: CheckpointHook | None = None,
        alarm_state: Callable[[str], AlarmState | None] | None = None,
        on_failed: FailedHook | None = None,
        member_id: str | None = None,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        self.alarms = alarms
        self.store = store
        self.settings = settings or DeliverySettings()
        self.clock = clock
        self.on_delivered = on_delivered
        # The profiler's marks by trace id: T07 evaluated (the notifier's), T08 fired,
        # T09 received (the consumer's 2xx).
        self.on_checkpoint = on_checkpoint
        # An alarm's current state by id, read when its books are written (the notifier's
        # index): a state the API set meanwhile is never overwritten by an older one.
        self.alarm_state = alarm_state
        # A delivery given up: the notifier turns it into a ``medevac.delivery.failed``
        # event (the outbox records the audit entry).
        self.on_failed = on_failed
        # Several controllers: it resumes only its own deliveries, and adopts a dead
        # controller's (``adopt_orphans``).
        self.member_id = member_id
        # Several controllers: it retries (and resumes) deliveries only while its
        # membership lease holds. One that was paused or cut off and woke up replaced
        # retries nothing more (it restarts): its pending deliveries are another
        # controller's to send by then.
        self.may_send = may_send
        self.random: Callable[[], float] = random.random  # the retries' jitter
        self.counters: Counter[str] = Counter()
        self.failing: Counter[str] = Counter()  # consumer origin -> failed attempts
        self.breakers: dict[str, Breaker] = {}  # by consumer (host:port)
        self._not_closed = 0  # breakers open or half-open: the eager path checks
        self._http: WebhookClient | None = None  # made in start, with the CA store
        self._tasks: set[asyncio.Task[Any]] = set()  # deliveries, connections
        self._by_alarm: dict[str, set[asyncio.Task[Any]]] = {}  # deliveries, by alarm id
        self._writing: set[asyncio.Task[Any]] = set()  # submitted, not yet in the database
        self._settled: list[tuple[str, str, int, float, str | None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writes = asyncio.Lock()
        # Its own thread for the notifier's writes: never queued behind BMC reads or
        # other work in the loop's default executor.
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._books_states: dict[str, AlarmState] = {}  # by alarm id, the latest
        self._books_changes: list[HistoryRow] = []
        self._books: asyncio.Task[None] | None = None  # their write, once due
        self._first_pending = 0  # deliveries not yet through their first attempt
        self._first_done = asyncio.Event()
        self._first_done.set()
        # The database's answer to the outbox's writes: None while they succeed, else
        # (since when, what failed) for ``health``; alarms wait unsent meanwhile.
        self._store_failing: tuple[float, str] | None = None
        self._closing = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> int:
        """Resume every delivery still pending in the outbox (several controllers: this
        one's); returns how many."""
        # Loading the CA store costs tens of ms: once here, not on the first alarm.
        tls = await asyncio.to_thread(ssl.create_default_context)
        self._http = WebhookClient(
            connections_per_origin=self.settings.connections_per_consumer,
            timeout=self.settings.timeout,
            tls=tls,
            targets=self.settings.targets,
        )
        pending = await asyncio.to_thread(self.store.pending, self.member_id)
        for row in pending:
            self._spawn(self._deliver(row, counted=False), row.alarm_id)
        self._flusher = asyncio.create_task(self._flush_loop())
        return len(pending)

    async def adopt_orphans(self, live: frozenset[str], mine: Callable[[str], bool]) -> int:
        """Send the pending deliveries of controllers no longer ``live``: the ones
        ``mine`` says (by alarm id) this controller takes, each taken in the store first,
        so that one survivor sends it. Returns how many were taken."""
        if self.member_id is None or self._http is None:
            return 0
        orphans = await asyncio.to_thread(self.store.orphans, live)
        taken = await asyncio.to_thread(
            self.store.adopt, [r for r in orphans if mine(r.alarm_id)], self.member_id
        )
        for row in taken:
            self._spawn(self._deliver(row, counted=False), row.alarm_id)
        if taken:
            log.warning("took over %d pending deliveries of controllers gone", len(taken))
        self.counters["adopted"] += len(taken)
        return len(taken)

    async def close(self) -> None:
        # What was submitted reaches the database first: a webhook not yet written
        # would be lost, one written but unsent is sent by the next start. A write
        # still failing is tried once more, then given up (loudly).
        self._closing.set()
        if self._books is not None:  # (perhaps not started: its finally would not run)
            self._books.cancel()
            self._books = None  # the last flush below writes them, not waiting for POSTs
        await asyncio.gather(*self._writing, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()
        if self._http is not None:
            await self._http.close()
        self._db_thread.shutdown(wait=True)

    def _spawn(self, coro: Any, alarm_id: str | None = None) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if alarm_id is not None:
            tasks = self._by_alarm.setdefault(alarm_id, set())
            tasks.add(task)
            task.add_done_callback(lambda t: self._forget(alarm_id, t))

    def _forget(self, alarm_id: str, task: asyncio.Task[Any]) -> None:
        tasks = self._by_alarm.get(alarm_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_alarm[alarm_id]

    def cancel_alarm(self, alarm_id: str) -> int:
        """Stop sending a deleted alarm's deliveries (the store cancelled them in its
        outbox table with the alarm); returns how many were under way. A delivery still
        being written finds its alarm gone before its first attempt."""
        tasks = self._by_alarm.pop(alarm_id, set())
        for task in tasks:
            task.cancel()
        self.counters["cancelled"] += len(tasks)
        return len(tasks)

    def _gone(self, row: DeliveryRow) -> bool:
        """Its alarm was deleted (the notifier's index says)."""
        return self.alarm_state is not None and self.alarm_state(row.alarm_id) is None

    def _write(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return task

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)``, a database write, on the outbox's thread after every write
        asked before it: the notifier's writes reach the database in the loop's order."""
        async with self._writes:
            return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    # -- intake -------------------------------------------------------------------

    def submit(
        self,
        states: list[tuple[str, str, str, float]],
        changes: list[HistoryRow],
        deliveries: list[DeliveryRow],
        *,
        chunked: bool = True,
    ) -> None:
        """Persist what a batch of events did, then send its deliveries (non-blocking).

        Large batches go to the database in growing chunks (2, 8, 32, ...), each sent
        as soon as it is committed: the first consumers hear within a small write
        while the rest are still being written. ``chunked=False``: one write, for
        the rest of a burst whose first alarms are already out (one write on an idle
        loop beats chunks written while the loop sends the previous ones).

        The alarms' states (id, state, reason, at) and history follow once the
        deliveries queued so far have been tried (``books_wait`` at most): on a
        two-core controller their write would take a core from the consumers just
        when they read the webhooks. A controller killed in between sends the
        deliveries again on its next start; those alarms then keep their previous
        state until their next change.
        """
        if states or changes:
            self._keep_books(states, changes)
        if not deliveries:
            return
        self._first_pending += len(deliveries)
        self._first_done.clear()
        start, size = 0, FIRST_CHUNK if chunked else len(deliveries)
        while start < len(deliveries):
            chunk = deliveries[start : start + size]
            if not (start == 0 and chunked and self._write_now(chunk)):
                self._write(self._persist_then_send(chunk))
            start, size = start + size, size * 4

    def _write_now(self, deliveries: list[DeliveryRow]) -> bool:
        """A batch's first chunk, written right here in the emitter's stack when the
        database is a local file nobody else is writing, and its POSTs written to
        their connections at once: whatever the emitter does next (the inspector
        goes on with the ports and the plan) runs while the consumers read. Handing
        the write to a thread and back would cost two wake-ups, milliseconds each on a
        busy machine. False: the thread writes it, as any other chunk."""
        if self._http is None or not self.alarms.db.local or self._writes.locked():
            return False
        try:
            self.alarms.record_deliveries_now(deliveries)
        except WriterBusy:
            return False  # another writer has it: the thread waits for its turn
        except Exception:
            log.exception("outbox write in place failed; trying again in its thread")
            return False
        self._send(deliveries, eager=True)
        return True

    async def _persist_then_send(self, deliveries: list[DeliveryRow]) -> None:
        """Write the deliveries to the outbox, then send them; never send one that is
        not recorded (a SIGKILL would lose it). A failed write is tried again with a
        bounded backoff for as long as the database stays away, the outbox reporting
        itself unhealthy meanwhile; at shutdown, what is still unwritten is given up."""
        delay = self.settings.write_retry_initial
        while True:
            try:
                # Chunks reach the database in the order they came.
                await self.write(self.alarms.record_firing, (), (), deliveries)
                break
            except Exception as exc:
                self.counters["write_failed"] += 1
                self._store_failed(exc, f"{len(deliveries)} alarms wait unsent")
                if self._closing.is_set():
                    self.counters["lost"] += len(deliveries)
                    log.critical(
                        "outbox: %d alarms never recorded at shutdown; they are not sent",
                        len(deliveries),
                    )
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
            delay = min(delay * 2, self.settings.write_retry_max_interval)
        self._store_answered()
        self._send(deliveries)

    def _store_failed(self, exc: Exception, what: str) -> None:
        """A write of the outbox failed: the first of a streak is logged as critical
        (the type of error only: its text may quote the rows' values)."""
        if self._store_failing is None:
            self._store_failing = (self.clock(), type(exc).__name__)
            log.critical(
                "outbox: the database refused a write (%s); %s until it answers",
                type(exc).__name__,
                what,
            )

    def _store_answered(self) -> None:
        if self._store_failing is not None:
            since, _ = self._store_failing
            self._store_failing = None
            log.warning("outbox: the database answers again after %.1f s", self.clock() - since)

    def health(self) -> str | None:
        """None while the outbox's writes succeed, else why it is unhealthy (no secret)."""
        if self._store_failing is None:
            return None
        since, error = self._store_failing
        return (
            f"outbox writes failing for {max(0.0, self.clock() - since):.0f} s ({error}); "
            "alarms are held unsent"
        )

    # -- the alarms' books --------------------------------------------------------

    def _keep_books(
        self, states: list[tuple[str, str, str, float]], changes: list[HistoryRow]
    ) -> None:
        for alarm_id, state, reason, at in states:
            self._books_states[alarm_id] = (state, reason, at)
        self._books_changes.extend(changes)
        if self._books is None:
            self._books = self._write(self._books_due())

    async def _books_due(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.books_wait
        try:
            while await self.first_attempts(max(0.0, deadline - loop.time())):
                # Whoever these attempts also woke goes first: a burst's rest queues
                # its webhooks now, and the books wait for them too.
                await asyncio.sleep(0)
                if self._first_done.is_set():
                    break
        finally:
            self._books = None  # what comes from now on waits for its own POSTs
        await self._write_books()

    async def _write_books(self) -> None:
        states, changes = self._books_states, self._books_changes
        if not states and not changes:
            return
        self._books_states, self._books_changes = {}, []
        try:
            await self.write(self._record_books, states, changes)
        except (Exception, asyncio.CancelledError) as exc:
            # The database is away, or the outbox stops mid-write: kept for the next
            # (or last) flush, newer first.
            for alarm_id, state in states.items():
                self._books_states.setdefault(alarm_id, state)
            self._books_changes[:0] = changes
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._store_failed(exc, f"{len(states)} alarm states wait")
            return
        self._store_answered()

    def _record_books(self, states: dict[str, AlarmState], changes: list[HistoryRow]) -> None:
        """On the outbox's thread: each alarm's state as it is now, unless deleted."""
        rows = []
        for alarm_id, submitted in states.items():
            now = self.alarm_state(alarm_id) if self.alarm_state is not None else submitted
            if now is not None:
                rows.append((alarm_id, *now))
        self.alarms.record_firing(rows, changes, ())

    def _send(self, deliveries: list[DeliveryRow], *, eager: bool = False) -> None:
        """``eager``: each request is written now over an idle kept-alive connection
        when there is one; its task only reads the answer."""
        self.counters["queued"] += len(deliveries)
        for row in deliveries:
            begun, request = None, None
            if eager and not (
                self._not_closed and self._breaker(consumer(row.url)).state != "closed"
            ):
                request = self._request(row)
                with contextlib.suppress(SendError):  # its task tries, fails, retries
                    begun = self.http.begin(row.url, *request)
                if begun is not None:
                    self._fired(row)
            self._spawn(
                self._deliver(row, counted=True, begun=begun, request=request), row.alarm_id
            )

    @staticmethod
    def _request(row: DeliveryRow) -> Request:
        headers = {
            "Content-Type": "application/json",
            "X-Openstack-Request-Id": f"req-{row.id}",
            "X-Medevac-Delivery-Id": row.id,
        }
        return json.dumps(row.payload).encode(), headers

    def _fired(self, row: DeliveryRow) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(row.trace_id, Mark.T08, self.clock())

    # -- sending ------------------------------------------------------------------

    def warm(self, urls: Mapping[str, int]) -> None:
        """Open connections now, without waiting, to these consumers (URL -> how many
        alarms could send there): as many as those webhooks can use at once (the
        pool's size at most), so that no webhook of the burst waits for a TCP (and
        TLS) handshake. Idle pooled connections and those being opened count; a
        consumer that cannot be reached is only counted. A consumer's keep-alive
        timeout has usually closed the last fault's connections: opening only the
        first chunk's two left the rest of a 100-alarm burst to open theirs on the
        way, and its last alarm came 7 to 8 ms later on the lab at the median, 11 to
        21 ms at the p99."""
        if self._http is None:
            return  # not started: nothing to keep warm yet
        alarms: Counter[str] = Counter()  # per consumer origin
        any_url: dict[str, str] = {}
        for url, n in urls.items():
            try:
                origin = self._http.target(url).origin
            except SendError:
                continue
            alarms[origin] += n
            any_url[origin] = url
        for origin, n in alarms.items():
            url = any_url[origin]
            for _ in range(self._http.reserve(url, n)):
                self._spawn(self._connect(url))

    async def _connect(self, url: str) -> None:
        try:
            await self.http.connect(url)
        except (SendError, TimeoutError) as exc:
            self.counters["warm_failed"] += 1
            log.debug("cannot open a connection to %s: %s", consumer(url), exc)
            return
        self.counters["warmed"] += 1

    @property
    def started(self) -> bool:
        return self._http is not None

    @property
    def http(self) -> WebhookClient:
        if self._http is None:
            raise RuntimeError("the outbox is not started")
        return self._http

    async def first_attempts(self, within: float) -> bool:
        """Wait (bounded) until every queued delivery has been tried once: the moment
        the inspector's cloud calls may start without competing with the alarms."""
        try:
            await asyncio.wait_for(self._first_done.wait(), within)
        except TimeoutError:
            return False
        return True

    def _tried(self) -> None:
        self._first_pending = max(0, self._first_pending - 1)
        if not self._first_pending:
            self._first_done.set()

    async def _deliver(
        self,
        row: DeliveryRow,
        *,
        counted: bool,
        begun: Begun | None = None,
        request: Request | None = None,
    ) -> None:
        """Send until delivered or given up; ``counted``: a fresh delivery whose first
        attempt ``first_attempts`` waits for; ``begun``: its first request, written."""
        owed = [counted]  # still owes ``first_attempts`` its first try
        try:
            await self._attempts(row, owed, begun, request)
        finally:
            if owed[0]:
                self._tried()  # cancelled before its first attempt ended

    async def _until_may_send(self) -> None:
        self.counters["held_without_lease"] += 1
        assert self.may_send is not None
        while not self.may_send():  # noqa: ASYNC110 (a lease read by time: no event)
            await asyncio.sleep(0.05)

    def _breaker(self, name: str) -> Breaker:
        """The circuit of the consumer ``name`` (host:port)."""
        b = self.breakers.get(name)
        if b is None:
            b = self.breakers[name] = Breaker(self.settings.breaker_failures)
        return b

    async def _attempts(
        self, row: DeliveryRow, owed: list[bool], begun: Begun | None, request: Request | None
    ) -> None:
        attempts = row.attempts
        origin = consumer(row.url)
        breaker = self._breaker(origin)
        give_up_at = row.created_at + self.settings.retry_for
        if row.next_attempt_at is not None:
            wait = row.next_attempt_at - self.clock()
            if wait > 0:
                await asyncio.sleep(min(wait, self.settings.retry_max_interval))
        while True:
            if begun is None and self._gone(row):
                self.counters["cancelled"] += 1
                self._settled.append((row.id, "cancelled", attempts, self.clock(), "alarm deleted"))
                return
            # A fresh alarm's first try goes at once (the isolation event is one).
            fresh = owed[0] or begun is not None
            if not fresh and self.may_send is not None and not self.may_send():
                await self._until_may_send()
                continue
            probe = False
            if breaker.state != "closed":
                if owed[0]:  # a consumer known down: nothing to wait for
                    owed[0] = False
                    self._tried()
                admitted = await self._admit(breaker, give_up_at)
                if admitted is None:
                    self._give_up(row, origin, attempts, "the consumer's circuit is open")
                    return
                probe = admitted
            attempts += 1
            error: str | None = None
            status: int | None = None
            if attempts == 1 and begun is None:
                self._fired(row)
            try:
                if begun is not None:
                    first, begun = begun, None
                    status = await self.http.finish(first)
                else:
                    request = request or self._request(row)
                    status = await self.http.post(row.url, *request)
                if status < 300:
                    now = self.clock()
                    self._answered(breaker, origin, ok=True, probe=probe, trips=False)
                    self.counters["delivered"] += 1
                    self._settled.append((row.id, "delivered", attempts, now, None))
                    if self.on_delivered is not None:
                        self.on_delivered(row, now)
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(row.trace_id, Mark.T09, now)
                    return
                error = f"HTTP {status}"
            except SendError as exc:
                error = str(exc)
            except TimeoutError:
                error = f"no answer within {self.settings.timeout:g} s"
            except asyncio.CancelledError:
                if probe:  # the next delivery probes instead
                    breaker.probing = False
                    breaker.notify()
                raise
            finally:
                if owed[0]:
                    owed[0] = False
                    self._tried()
            self._answered(breaker, origin, ok=False, probe=probe, trips=trips_breaker(status))
            self.counters["retried"] += 1
            self.failing[origin] += 1
            now = self.clock()
            if now >= give_up_at:
                self._give_up(row, origin, attempts, error)
                return
            delay = backoff(
                attempts, self.settings.retry_initial, self.settings.retry_max_interval, self.random
            )
            self._settled.append((row.id, "pending", attempts, now + delay, error))
            await asyncio.sleep(delay)

    async def _admit(self, b: Breaker, give_up_at: float) -> bool | None:
        """Wait while ``b`` is open: True when this delivery goes as the probe, False
        when the circuit closed, None when the delivery's time ran out first."""
        loop = asyncio.get_running_loop()
        while b.state != "closed":
            now = loop.time()
            if not b.probing and now >= b.next_probe:
                b.probing = True
                self.counters["probes"] += 1
                return True
            left = give_up_at - self.clock()
            if left <= 0:
                return None
            wait = left if b.probing else min(left, b.next_probe - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(b.changed.wait(), wait)
        return False

    def _answered(self, b: Breaker, origin: str, *, ok: bool, probe: bool, trips: bool) -> None:
        """An attempt's outcome, as its consumer's circuit counts it."""
        was = b.state
        if ok or not trips:
            b.failures, b.probes_failed, b.probing = 0, 0, False
        else:
            b.failures += 1
            if probe:
                b.probing = False
                b.probes_failed += 1
            if probe or b.failures == b.threshold:  # a failed probe, or just opened
                b.next_probe = asyncio.get_running_loop().time() + backoff(
                    b.probes_failed + 1,
                    self.settings.retry_initial,
                    self.settings.retry_max_interval,
                    self.random,
                )
        now = b.state
        if (was == "closed") != (now == "closed"):
            self._not_closed += 1 if was == "closed" else -1
            if now == "closed":
                log.info("consumer %s answers again: its circuit is closed", origin)
            else:
                log.warning(
                    "consumer %s failed %d times in a row: its circuit is open", origin, b.failures
                )
        if now != was or probe:
            b.notify()

    def _give_up(self, row: DeliveryRow, origin: str, attempts: int, error: str | None) -> None:
        """A delivery past ``retry_for``: marked failed, recorded in the audit log and
        told to the notifier (an event operators can alarm on). The consumer is named
        by host and port only."""
        error = error or "unknown"
        self.counters["failed"] += 1
        log.warning("delivery %s to %s abandoned: %s", row.id, origin, error)
        self._settled.append((row.id, "failed", attempts, self.clock(), error))
        detail = {
            "delivery_id": row.id,
            "alarm_id": row.alarm_id,
            "consumer": origin,
            "attempts": attempts,
            "error": error,
        }
        self._write(self._audit("delivery.failed", origin, detail, row.trace_id))
        if self.on_failed is not None:
            try:
                self.on_failed(row, origin, attempts, error)
            except Exception:
                log.exception("cannot report the failed delivery %s", row.id)

    async def _audit(
        self, kind: str, subject: str, detail: dict[str, Any], trace_id: str | None
    ) -> None:
        try:
            await self.write(
                self.alarms.db.record_audit, kind, subject, "notifier", detail, trace_id
            )
        except Exception as exc:
            self._store_failed(exc, f"the audit entry {kind} of {subject} is not recorded")

    # -- outcomes -----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.settle_interval)
            await self._flush()

    async def _flush(self) -> None:
        if self._books is None:
            await self._write_books()  # books a failed write kept (else: none)
        if not self._settled:
            return
        batch, self._settled = self._settled, []
        try:
            await self.write(self.store.settle, batch)
        except asyncio.CancelledError:  # stopped mid-write: the last flush writes them
            self._settled[:0] = batch
            raise
        except Exception as exc:  # the database is away: keep the outcomes for the next flush
            self._store_failed(exc, f"{len(batch)} delivery outcomes wait")
            self._settled[:0] = batch
            return
        self._store_answered()

    @property
    def pending(self) -> int:
        """Deliveries being written or sent (each until delivered or given up)."""
        return len(self._tasks) + len(self._writing)

    def stats(self) -> dict[str, Any]:
        return {
            "queued": self.counters["queued"],
            "delivered": self.counters["delivered"],
            "retried": self.counters["retried"],
            "failed": self.counters["failed"],
            "in_flight": self.pending,
            "failing_consumers": dict(self.failing),
            "probes": self.counters["probes"],
            "circuits": {
                name: {"state": b.state, "failures_in_a_row": b.failures}
                for name, b in self.breakers.items()
            },
        }


def consumer(url: str) -> str:
    """A consumer's name in counters and logs: host and port, never the URL's
    credentials or path."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return f"{host}:{port}" if port else host

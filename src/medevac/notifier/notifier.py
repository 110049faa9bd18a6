"""The notifier: Aodh-style event alarms, evaluated the moment an event is emitted.

Alarms live in memory in an ``AlarmIndex`` (loaded from the database at start) and
in the database (the truth). ``emit`` evaluates events synchronously on the event
loop, moves matched alarms to ``alarm`` and hands the webhooks to the outbox, which
persists them before it sends.

A fault's burst (one event per server of a failed host) is evaluated first alarms
first: evaluation stops at the first webhooks found, which go to the outbox at once,
and the rest of the burst is evaluated once those have been tried (a bounded wait).
Nothing else then runs on the event loop while the first webhooks are written (on
the loop, or by the outbox thread when another writer has the database): a thread
waits for the interpreter's lock as long as the loop computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from medevac.changes import ALARMS, ChangeFeed
from medevac.checkpoints import Mark
from medevac.notifier.alarms import Alarm, AlarmIndex, AlarmSpec
from medevac.notifier.delivery import (
    FIRST_CHUNK,
    AlarmState,
    CheckpointHook,
    DeliverySettings,
    Outbox,
)
from medevac.notifier.events import DELIVERY_FAILED, Event
from medevac.storage.records import AlarmRow, AlarmStore, DeliveryRow, HistoryRow, OutboxStore

log = logging.getLogger(__name__)


class AlarmNotFound(LookupError):
    pass


def aodh_payload(alarm: Alarm, previous: str, event: dict[str, Any], reason: str) -> dict[str, Any]:
    """Exactly what Aodh POSTs to an alarm action."""
    return {
        "alarm_name": alarm.spec.name,
        "alarm_id": alarm.alarm_id,
        "severity": alarm.spec.severity,
        "previous": previous,
        "current": alarm.state,
        "reason": reason,
        "reason_data": {"type": "event", "event": event},
    }


def _alarm(r: AlarmRow) -> Alarm:
    return Alarm(
        r.alarm_id,
        AlarmSpec.model_validate(r.spec),
        r.project_id,
        r.state,
        r.state_timestamp,
        r.timestamp,
        r.state_reason,
    )


def _reason(alarm: Alarm, event: Event) -> str:
    return (
        f"Event <id={event.message_id},event_type={event.event_type}> "
        f"hits the query <query={alarm.query_json}>."
    )


class _Batch:
    """Events emitted together, evaluated in order, possibly over two turns. They are
    drawn from their iterable as they are evaluated: a burst's rest is only built once
    its first alarms are out."""

    __slots__ = ("events", "exhausted", "on_queued", "queued")

    def __init__(self, events: Iterable[Event], on_queued: Callable[[int], None] | None) -> None:
        self.events = iter(events)
        self.exhausted = False  # every event drawn and evaluated
        self.queued = 0  # deliveries queued so far
        self.on_queued = on_queued

    def draw(self) -> Event | None:
        """The next event, or None at the end (or when building it failed: the
        iterable cannot go on after that)."""
        try:
            return next(self.events)
        except StopIteration:
            pass
        except Exception:
            log.exception("cannot build the next event of a batch; its rest is dropped")
        self.exhausted = True
        return None


class Channel(Protocol):
    """Another way out for every event (SNMP traps, a message bus); must not block."""

    async def start(self) -> None: ...

    def publish(self, events: Iterable[Event]) -> None: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class Notifier:
    def __init__(
        self,
        store: AlarmStore,
        deliveries: OutboxStore,
        delivery: DeliverySettings | None = None,
        *,
        on_checkpoint: CheckpointHook | None = None,
        channels: Iterable[Channel] = (),
        clock: Callable[[], float] = time.time,
        first_alarms_wait: float = 0.005,
        member_id: str | None = None,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        # Several controllers: the deliveries it makes are its own to send.
        self.member_id = member_id
        # The notifier's own outbox: it reads the alarms' states from the notifier's
        # index and reports the deliveries it gives up.
        self.outbox = Outbox(
            store,
            deliveries,
            delivery,
            clock=clock,
            on_checkpoint=on_checkpoint,
            alarm_state=self._alarm_state,
            on_failed=self._delivery_failed,
            member_id=member_id,
            may_send=may_send,
        )
        self.channels = list(channels)
        self.clock = clock
        # How long the rest of a burst waits for its first webhooks to be tried.
        self.first_alarms_wait = first_alarms_wait
        self.index = AlarmIndex()
        # Told of every alarm created, changed, fired or deleted (the live views).
        self.changes: ChangeFeed | None = None
        self.evaluated = 0
        self.fired = 0
        self.loaded = False  # the alarms are in the index (``load``)
        self._pending: deque[_Batch] = deque()  # batches (or their rest) not yet evaluated
        self._resume: asyncio.Task[None] | None = None
        self._all_evaluated = asyncio.Event()
        self._all_evaluated.set()

    async def load(self) -> int:
        rows = await asyncio.to_thread(self.store.all)
        for r in rows:
            self.index.put(_alarm(r))
        self.loaded = True
        return len(rows)

    async def follow_store(self, every: float) -> None:
        """Several controllers share the alarms: every ``every`` s, the ones another
        controller created, changed (rule or state) or deleted are taken into the index.
        One cheap read of each alarm's two timestamps; only what changed is read whole."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except Exception as exc:  # the store away: the next round catches up
                log.warning("alarms not refreshed from the store: %s", exc)

    async def refresh(self) -> int:
        """Take the store's alarms into the index; returns how many changed."""
        stored = await asyncio.to_thread(self.store.versions)
        known = self.index.alarms
        changed = [
            i
            for i, (at, state_at) in stored.items()
            if i not in known or (known[i].timestamp, known[i].state_timestamp) < (at, state_at)
        ]
        gone = [i for i in known if i not in stored]
        for alarm_id in gone:
            self.index.remove(alarm_id)
            self.outbox.cancel_alarm(alarm_id)
        for row in await asyncio.to_thread(self.store.some, changed) if changed else []:
            self.index.put(_alarm(row))
        return len(changed) + len(gone)

    async def start(self) -> int:
        """Load the alarms, resume the outbox, open the channels; returns deliveries resumed."""
        await self.load()
        resumed = await self.outbox.start()
        for channel in self.channels:
            await channel.start()
        return resumed

    async def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            await asyncio.gather(self._resume, return_exceptions=True)
        self._evaluate_pending()  # nothing emitted is dropped at shutdown
        await self.outbox.close()
        for channel in self.channels:
            channel.close()

    # -- evaluation (the hot path) ------------------------------------------------

    def emit(
        self,
        events: Iterable[Event],
        *,
        first_alarms_first: bool = False,
        on_queued: Callable[[int], None] | None = None,
    ) -> int:
        """Evaluate events against the alarms and queue what fires; returns the
        deliveries this call queued. Batches are evaluated in the order emitted.

        ``first_alarms_first`` (a fault's burst): evaluation stops once the first
        webhooks are found, which are queued at once; the rest is evaluated on the
        loop once they have been tried, and so is any batch emitted meanwhile.
        ``on_queued`` gets the batch's total when part of it was evaluated later (the
        return value is then only what was queued at once).
        """
        batch = _Batch(events, on_queued)
        if not self._pending:
            self._evaluate_batch(batch, FIRST_CHUNK if first_alarms_first else None)
            if batch.exhausted:
                return batch.queued
        self._pending.append(batch)
        self._all_evaluated.clear()
        if self._resume is None:
            self._resume = asyncio.get_running_loop().create_task(self._resume_pending())
        return batch.queued

    async def _resume_pending(self) -> None:
        try:
            # The first webhooks' write and POSTs have the loop to themselves.
            await self.outbox.first_attempts(self.first_alarms_wait)
            while self._pending:
                if self._evaluate_next() and self._pending:
                    await asyncio.sleep(0)  # its outbox write starts before the next batch
            self._all_evaluated.set()
        finally:
            self._resume = None

    def _evaluate_next(self) -> int:
        """Evaluate the rest of the oldest pending batch; returns the deliveries queued."""
        batch = self._pending[0]
        before = batch.queued
        self._evaluate_batch(batch, None, chunked=False)
        self._pending.popleft()
        self._finished(batch)
        return batch.queued - before

    def _evaluate_pending(self) -> None:
        while self._pending:
            self._evaluate_next()
        self._all_evaluated.set()

    def _finished(self, batch: _Batch) -> None:
        if batch.on_queued is not None:
            try:
                batch.on_queued(batch.queued)
            except Exception:  # a caller's bookkeeping must not cost the next batch
                log.exception("on_queued callback failed")

    def _evaluate_batch(
        self, batch: _Batch, stop_after: int | None, *, chunked: bool = True
    ) -> None:
        """Evaluate ``batch`` from where it stopped: all of it, or until ``stop_after``
        deliveries are found. What fires goes to the outbox; the other channels get
        the events evaluated."""
        now = self.clock()
        states: list[tuple[str, str, str, float]] = []
        changes: list[HistoryRow] = []
        deliveries: list[DeliveryRow] = []
        evaluated: list[Event] = []
        while (event := batch.draw()) is not None:
            evaluated.append(event)
            try:
                self._evaluate(event, now, states, changes, deliveries)
            except Exception:  # one bad event must not stop the others' alarms
                log.exception("cannot evaluate event %s %s", event.event_type, event.message_id)
            if stop_after is not None and len(deliveries) >= stop_after:
                break
        if self.outbox.on_checkpoint is not None:
            at = self.clock()
            for trace_id in {e.trace_id for e in evaluated if e.trace_id}:
                self.outbox.on_checkpoint(trace_id, Mark.T07, at)
        if states or deliveries:
            self.outbox.submit(states, changes, deliveries, chunked=chunked)
        batch.queued += len(deliveries)
        for channel in self.channels:
            channel.publish(evaluated)

    def _evaluate(
        self,
        event: Event,
        now: float,
        states: list[tuple[str, str, str, float]],
        changes: list[HistoryRow],
        deliveries: list[DeliveryRow],
    ) -> None:
        self.evaluated += 1
        aodh_event: dict[str, Any] | None = None
        for alarm in self.index.matching(event):
            fire = alarm.fires_on()
            previous = alarm.state
            reason = _reason(alarm, event)
            if previous != "alarm":
                alarm.state, alarm.state_timestamp, alarm.state_reason = "alarm", now, reason
                states.append((alarm.alarm_id, "alarm", reason, now))
                if self.changes is not None:
                    self.changes.publish(ALARMS, alarm.alarm_id, alarm.project_id, state="alarm")
                changes.append(
                    HistoryRow(
                        str(uuid.uuid4()),
                        alarm.alarm_id,
                        alarm.project_id,
                        "state transition",
                        {"state": "alarm", "previous": previous, "reason": reason},
                        now,
                    )
                )
            if not fire:
                continue
            self.fired += 1
            if aodh_event is None:
                aodh_event = event.as_aodh()  # once per event, whatever fires on it
            payload = aodh_payload(alarm, previous, aodh_event, reason)
            deliveries.extend(
                DeliveryRow(
                    str(uuid.uuid4()),
                    alarm.alarm_id,
                    url,
                    payload,
                    now,
                    event.trace_id,
                    owner=self.member_id,
                )
                for url in alarm.spec.alarm_actions
            )

    def _delivery_failed(self, row: DeliveryRow, consumer: str, attempts: int, error: str) -> None:
        """A webhook given up: a critical ``medevac.delivery.failed`` event, for the
        operators' alarms (the consumer by host and port only). A failed delivery of
        that event itself raises no other: a dead consumer cannot feed a loop."""
        event = row.payload.get("reason_data", {}).get("event", {})
        if isinstance(event, dict) and event.get("event_type") == DELIVERY_FAILED:
            return
        traits = {
            "consumer": consumer,
            "alarm_id": row.alarm_id,
            "delivery_id": row.id,
            "attempts": attempts,
            "error": error,
        }
        failed = Event(
            DELIVERY_FAILED, self.clock(), traits, trace_id=row.trace_id, severity="critical"
        )
        self.emit([failed])

    def _alarm_state(self, alarm_id: str) -> AlarmState | None:
        alarm = self.index.alarms.get(alarm_id)
        if alarm is None:
            return None
        return alarm.state, alarm.state_reason, alarm.state_timestamp

    def prepare(self, resources: Iterable[tuple[str, str]]) -> None:
        """Events about these resources may come soon: connect to their consumers."""
        self.outbox.warm(self.index.action_urls(resources))

    async def sent(self, within: float) -> bool:
        """Wait (at most ``within`` s) until the events emitted so far are evaluated and
        the alarms they fired were each tried once."""
        deadline = time.monotonic() + within
        try:
            await asyncio.wait_for(self._all_evaluated.wait(), within)
        except TimeoutError:
            return False
        return await self.outbox.first_attempts(max(0.0, deadline - time.monotonic()))

    # -- the alarm API's operations -----------------------------------------------

    def get(self, alarm_id: str) -> Alarm:
        alarm = self.index.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmNotFound(alarm_id)
        return alarm

    def visible_to(self, project_id: str | None) -> list[Alarm]:
        """Every alarm (project_id None: an operator) or one project's."""
        alarms = self.index.alarms.values()
        return [a for a in alarms if project_id is None or a.project_id == project_id]

    async def _persist(self, alarm: Alarm, change_type: str, detail: dict[str, Any]) -> None:
        row = AlarmRow(
            alarm.alarm_id,
            alarm.project_id,
            alarm.state,
            alarm.state_reason,
            alarm.state_timestamp,
            alarm.timestamp,
            alarm.spec.model_dump(),
        )
        change = HistoryRow(
            str(uuid.uuid4()), alarm.alarm_id, alarm.project_id, change_type, detail, self.clock()
        )
        await self.outbox.write(self.store.put, row, change)
        if self.changes is not None:
            self.changes.publish(ALARMS, alarm.alarm_id, alarm.project_id, state=alarm.state)

    async def create(self, spec: AlarmSpec, project_id: str | None) -> Alarm:
        alarm = Alarm.new(spec, project_id, self.clock())
        await self._persist(alarm, "creation", alarm.as_api())
        self.index.put(alarm)
        return alarm

    async def replace(self, alarm_id: str, spec: AlarmSpec) -> Alarm:
        old = self.get(alarm_id)
        now = self.clock()
        alarm = Alarm(alarm_id, spec, old.project_id, spec.state, now, now, "")
        if spec.state == old.state:
            alarm.state_timestamp, alarm.state_reason = old.state_timestamp, old.state_reason
        await self._persist(alarm, "rule change", alarm.as_api())
        self.index.put(alarm)
        return alarm

    async def set_state(self, alarm_id: str, state: str, reason: str) -> Alarm:
        alarm = self.get(alarm_id)
        previous = alarm.state
        alarm.state, alarm.state_timestamp, alarm.state_reason = state, self.clock(), reason
        detail = {"state": state, "previous": previous, "reason": reason}
        await self._persist(alarm, "state transition", detail)
        return alarm

    async def delete(self, alarm_id: str) -> None:
        alarm = self.get(alarm_id)
        change = HistoryRow(
            str(uuid.uuid4()),
            alarm_id,
            alarm.project_id,
            "deletion",
            alarm.as_api(),
            self.clock(),
        )
        await self.outbox.write(self.store.delete, alarm_id, change)
        self.index.remove(alarm_id)
        self.outbox.cancel_alarm(alarm_id)
        if self.changes is not None:
            self.changes.publish(ALARMS, alarm_id, alarm.project_id, deleted=True)

    async def history(self, alarm_id: str) -> list[HistoryRow]:
        self.get(alarm_id)
        return await asyncio.to_thread(self.store.history, alarm_id)

    async def all_history(self, project_id: str | None) -> list[HistoryRow]:
        """Every change of every alarm, deleted ones too (one project's unless None),
        newest first."""
        return await asyncio.to_thread(self.store.history, None, None, project_id=project_id)

    def stats(self) -> dict[str, Any]:
        return {
            "alarms": len(self.index),
            "events_evaluated": self.evaluated,
            "alarms_fired": self.fired,
            "delivery": self.outbox.stats(),
            "channels": {type(c).__name__: c.stats() for c in self.channels},
        }

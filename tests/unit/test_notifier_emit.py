"""The notifier's evaluation: a bad event costs only its own alarms; a fault's burst
goes out first alarms first, and no batch is lost or reordered on the way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from medevac.notifier.alarms import Alarm, AlarmSpec
from medevac.notifier.events import INSTANCE_UPDATE, Event
from medevac.notifier.notifier import Notifier


class Outbox:
    """Records each batch the notifier hands over; sends nothing."""

    on_checkpoint = None

    def __init__(self) -> None:
        self.batches: list[list[str]] = []  # the alarm (named after its server) of each delivery
        self.chunked: list[bool] = []

        self.tried = asyncio.Event()  # set: the first webhooks were tried
        self.waited: list[float] = []

    def submit(
        self, states: Any, changes: Any, deliveries: list[Any], *, chunked: bool = True
    ) -> None:
        self.batches.append([d.payload["alarm_name"] for d in deliveries])
        self.chunked.append(chunked)

    async def first_attempts(self, within: float) -> bool:
        self.waited.append(within)
        try:
            await asyncio.wait_for(self.tried.wait(), within)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        pass


class Channel:
    def __init__(self) -> None:
        self.events: list[str] = []

    def publish(self, events: list[Event]) -> None:
        self.events.extend(e.traits["instance_id"] for e in events)

    def close(self) -> None:
        pass


def failure(server: str, at: float = 0.0) -> Event:
    return Event(INSTANCE_UPDATE, at, {"instance_id": server, "project_id": "p1"})


def notifier(servers: list[str], **kwargs: Any) -> tuple[Notifier, Outbox, Channel]:
    """A notifier with one alarm per server (named after it)."""
    outbox, channel = Outbox(), Channel()
    n = Notifier(store=None, deliveries=None, channels=[channel], **kwargs)  # type: ignore[arg-type]
    n.outbox = outbox  # type: ignore[assignment]  # records the batches instead of sending
    for s in servers:
        spec = AlarmSpec.model_validate(
            {
                "name": s,
                "alarm_actions": ["http://consumer.example/failure"],
                "event_rule": {
                    "event_type": INSTANCE_UPDATE,
                    "query": [{"field": "traits.instance_id", "op": "eq", "value": s}],
                },
            }
        )
        n.index.put(Alarm.new(spec, "p1", 0.0))
    return n, outbox, channel


def test_one_bad_event_does_not_stop_the_others() -> None:
    n, outbox, channel = notifier(["s1", "s2", "s3"])
    # Its time cannot be written as Aodh's timestamp: building its payload raises.
    bad = failure("s2", at=float("nan"))
    assert n.emit([failure("s1"), bad, failure("s3")]) == 2
    assert outbox.batches == [["s1", "s3"]]
    assert channel.events == ["s1", "s2", "s3"]  # the other channels still get every event


SERVERS = [f"s{i}" for i in range(10)]


def test_a_burst_queues_its_first_alarms_alone_then_the_rest_once_they_were_tried() -> None:
    async def go() -> None:
        n, outbox, channel = notifier(SERVERS, first_alarms_wait=60)
        totals: list[int] = []
        queued = n.emit(
            [failure(s) for s in SERVERS], first_alarms_first=True, on_queued=totals.append
        )
        assert queued == 2
        assert outbox.batches == [["s0", "s1"]]  # in the order emitted, nothing else yet
        assert channel.events == ["s0", "s1"]
        assert totals == []
        await asyncio.sleep(0.001)
        assert len(outbox.batches) == 1  # the rest waits while the first are being tried
        outbox.tried.set()
        await n.sent(1.0)
        assert outbox.batches == [["s0", "s1"], SERVERS[2:]]
        assert outbox.chunked == [True, False]  # the rest in one write: the first are out
        assert channel.events == SERVERS
        assert totals == [10]

    asyncio.run(go())


def test_the_rest_of_a_burst_goes_when_its_first_alarms_are_slow() -> None:
    async def go() -> None:
        n, outbox, _ = notifier(SERVERS, first_alarms_wait=0.01)
        n.emit([failure(s) for s in SERVERS], first_alarms_first=True)
        assert await n.sent(1.0) is False  # never tried: the fake consumer is stuck
        assert outbox.waited[0] == 0.01
        assert [len(b) for b in outbox.batches] == [2, 8]

    asyncio.run(go())


def test_batches_emitted_during_a_burst_are_evaluated_after_it_in_order() -> None:
    async def go() -> None:
        n, outbox, channel = notifier([*SERVERS, "later"], first_alarms_wait=60)
        totals: list[int] = []
        n.emit([failure(s) for s in SERVERS], first_alarms_first=True, on_queued=totals.append)
        # Emitted while the burst's rest waits: it must not overtake it.
        assert n.emit([failure("later")], on_queued=totals.append) == 0
        outbox.tried.set()
        assert await n.sent(1.0) is True
        assert outbox.batches == [["s0", "s1"], SERVERS[2:], ["later"]]
        assert channel.events == [*SERVERS, "later"]
        assert totals == [10, 1]

    asyncio.run(go())


def test_close_evaluates_what_is_still_waiting() -> None:
    async def go() -> None:
        n, outbox, _ = notifier(SERVERS, first_alarms_wait=60)
        n.emit([failure(s) for s in SERVERS], first_alarms_first=True)
        await n.close()
        assert [len(b) for b in outbox.batches] == [2, 8]

    asyncio.run(go())


def test_a_burst_with_no_alarms_is_evaluated_at_once() -> None:
    n, outbox, channel = notifier([])
    assert n.emit([failure(s) for s in SERVERS], first_alarms_first=True) == 0
    assert outbox.batches == []
    assert channel.events == SERVERS


def test_a_bursts_events_are_built_only_as_they_are_evaluated() -> None:
    """An iterator's events are drawn as evaluated: the first webhooks wait for two
    events, not for the whole burst to be built; one that cannot be built ends its
    batch (logged) and never blocks the batches after it."""

    async def go() -> None:
        n, outbox, channel = notifier([*SERVERS, "later"], first_alarms_wait=60)
        built: list[str] = []

        def burst(fail_at: str | None = None) -> Iterator[Event]:
            for s in SERVERS:
                if s == fail_at:
                    raise RuntimeError("a bug while building an event")
                built.append(s)
                yield failure(s)

        n.emit(burst(), first_alarms_first=True)
        assert built == ["s0", "s1"]
        outbox.tried.set()
        assert await n.sent(1.0) is True
        assert built == SERVERS and outbox.batches == [["s0", "s1"], SERVERS[2:]]

        for a in n.index.alarms.values():
            a.state = "ok"
        outbox.batches.clear()
        n.emit(burst(fail_at="s5"), first_alarms_first=True)
        n.emit([failure("later")])
        assert await n.sent(1.0) is True
        assert outbox.batches == [["s0", "s1"], ["s2", "s3", "s4"], ["later"]]
        assert channel.events[-6:] == ["s0", "s1", "s2", "s3", "s4", "later"]

    asyncio.run(go())


def test_the_next_batch_waits_for_the_previous_ones_write_to_start() -> None:
    """Once a burst's rest has queued its webhooks, the loop turns before the next
    batch is evaluated: that write is under way while the loop evaluates."""

    async def go() -> None:
        n, outbox, _ = notifier([*SERVERS, "later"], first_alarms_wait=60)
        turns: list[int] = []
        n.emit([failure(s) for s in SERVERS], first_alarms_first=True)
        n.emit([failure("later")])
        outbox.tried.set()

        async def count_turns() -> None:
            while True:
                turns.append(len(outbox.batches))
                await asyncio.sleep(0)

        counter = asyncio.ensure_future(count_turns())
        assert await n.sent(1.0) is True
        counter.cancel()
        assert outbox.batches == [["s0", "s1"], SERVERS[2:], ["later"]]
        assert 2 in turns  # a turn ran between the rest's submit and the next batch

    asyncio.run(go())

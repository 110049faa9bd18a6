"""The notifier's evaluation in slices: first webhooks early, order and counts kept."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from medevac.notifier.alarms import Alarm, AlarmSpec
from medevac.notifier.events import INSTANCE_UPDATE, Event
from medevac.notifier.notifier import EVENTS_PER_TURN, FIRST_SLICE, FIRST_WAIT, Notifier


class Outbox:
    """Records each batch the notifier hands over; sends nothing."""

    on_checkpoint = None

    def __init__(self) -> None:
        self.batches: list[list[str]] = []  # the server of each delivery, by batch
        self.tried = asyncio.Event()  # every delivery so far had its first request sent
        self.tried.set()

    def submit(self, states: Any, changes: Any, deliveries: list[Any]) -> None:
        self.batches.append([d.payload["alarm_name"] for d in deliveries])

    async def first_attempts(self, within: float) -> bool:
        return await self.first_sent(within)

    async def first_sent(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self.tried.wait(), within)
        except TimeoutError:
            return False
        return True


class Channel:
    def __init__(self) -> None:
        self.events: list[str] = []

    def publish(self, events: list[Event]) -> None:
        self.events.extend(e.traits["instance_id"] for e in events)


def notifier(servers: list[str]) -> tuple[Notifier, Outbox, Channel]:
    outbox, channel = Outbox(), Channel()
    n = Notifier(store=None, outbox=outbox, channels=[channel])  # type: ignore[arg-type]
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


def failure(server: str) -> Event:
    return Event(INSTANCE_UPDATE, 0.0, {"instance_id": server, "project_id": "p1"})


def servers_of(outbox: Outbox) -> list[str]:
    """Each delivery's server (its alarm is named after it), in the order handed over."""
    return [server for batch in outbox.batches for server in batch]


def test_first_slice_is_handed_over_before_emit_returns_the_rest_on_later_turns() -> None:
    servers = [f"s{i:03}" for i in range(100)]
    n, outbox, channel = notifier(servers)

    async def scenario() -> None:
        n.emit([failure(s) for s in servers])
        # Before the loop turns: only the first slice is out.
        assert [len(b) for b in outbox.batches] == [FIRST_SLICE]
        assert channel.events == servers[:FIRST_SLICE]
        assert await n.sent(5)

    asyncio.run(scenario())
    sizes = [len(b) for b in outbox.batches]
    assert sizes == [2, 8, 32, 58]  # each slice four times the last
    assert servers_of(outbox) == servers  # in order, each once
    assert channel.events == servers


def test_the_rest_waits_until_the_first_requests_are_sent_or_a_few_ms() -> None:
    servers = [f"s{i:03}" for i in range(20)]
    n, outbox, _ = notifier(servers)

    async def scenario() -> None:
        outbox.tried.clear()  # the first POSTs are on the wire
        n.emit([failure(s) for s in servers])
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(outbox.batches) == 1  # the loop is theirs
        outbox.tried.set()
        assert await n.sent(5)
        assert servers_of(outbox) == servers

        # A consumer that never answers holds the rest back FIRST_WAIT at most.
        for alarm in n.index.alarms.values():
            alarm.state = "ok"
        outbox.batches.clear()
        outbox.tried.clear()
        t0 = time.monotonic()
        n.emit([failure(s) for s in servers])
        await asyncio.wait_for(n._drained.wait(), 1)
        assert time.monotonic() - t0 >= FIRST_WAIT
        assert servers_of(outbox) == servers

    asyncio.run(scenario())


def test_a_later_emit_waits_for_the_earlier_one_and_counts_are_its_own() -> None:
    servers = [f"s{i:03}" for i in range(50)] + ["late"]
    n, outbox, _ = notifier(servers)
    counts: dict[str, list[int]] = {"big": [], "late": []}

    async def scenario() -> None:
        n.emit([failure(s) for s in servers[:50]], counts["big"].append)
        n.emit([failure("late")], counts["late"].append)
        assert await n.sent(5)

    asyncio.run(scenario())
    assert servers_of(outbox)[-1] == "late"  # not overtaking the first batch
    assert sum(counts["big"]) == 50
    assert counts["late"] == [1]


def test_events_that_fire_nothing_still_share_the_loop() -> None:
    n, outbox, channel = notifier([])
    turns = 0

    async def scenario() -> None:
        nonlocal turns
        n.emit([failure(f"x{i}") for i in range(3 * EVENTS_PER_TURN)])
        while not n._drained.is_set():
            turns += 1
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert outbox.batches == []
    assert len(channel.events) == 3 * EVENTS_PER_TURN
    assert turns >= 2  # not all in one turn


def test_one_bad_event_does_not_stop_the_others() -> None:
    servers = ["s1", "s2", "s3"]
    n, outbox, _ = notifier(servers)
    # Its time cannot be written as Aodh's timestamp: building its payload raises.
    bad = Event(INSTANCE_UPDATE, float("nan"), {"instance_id": "s2", "project_id": "p1"})

    async def scenario() -> None:
        n.emit([failure("s1"), bad, failure("s3")])
        assert await n.sent(5)

    asyncio.run(scenario())
    assert servers_of(outbox) == ["s1", "s3"]


def test_without_a_running_loop_everything_is_evaluated_at_once() -> None:
    servers = [f"s{i}" for i in range(20)]
    n, outbox, _ = notifier(servers)
    n.emit([failure(s) for s in servers])
    assert servers_of(outbox) == servers
    assert n._drained.is_set()

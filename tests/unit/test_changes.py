"""The change feed: publishing never waits, each subscriber gets what its filter lets
through in order, one that falls behind is dropped, a stop ends every subscription."""

from __future__ import annotations

import asyncio
import threading

from medevac.api.auth import Principal
from medevac.api.stream import visible_to
from medevac.changes import ALARMS, HOSTS, Change, ChangeFeed
from medevac.config import Role
from medevac.inspector.inspector import retry_attempt


def test_publishing_without_subscribers_costs_nothing_and_keeps_nothing() -> None:
    feed = ChangeFeed()
    feed.publish(HOSTS, "h1", state="LOST")
    assert feed.published == 0 and feed.subscribers == 0


def test_each_subscriber_gets_what_its_filter_accepts_in_order() -> None:
    asyncio.run(_each_subscriber_gets_what_its_filter_accepts_in_order())


async def _each_subscriber_gets_what_its_filter_accepts_in_order() -> None:
    feed = ChangeFeed()
    everything = feed.subscribe()
    alarms = feed.subscribe(lambda c: c.topic == ALARMS)
    feed.publish(HOSTS, "h1", monitor="SUSPECT")
    feed.publish(ALARMS, "a1", "p1", state="alarm")
    feed.publish(HOSTS, "h1", monitor="LOST")
    got = [await everything.next(1) for _ in range(3)]
    assert [(c.topic, c.subject) for c in got if c] == [
        (HOSTS, "h1"),
        (ALARMS, "a1"),
        (HOSTS, "h1"),
    ]
    first = await alarms.next(1)
    assert first is not None and first.as_dict()["data"] == {"state": "alarm"}
    assert await alarms.next(0.01) is None  # nothing more for it


def test_a_subscriber_that_falls_behind_is_dropped_not_waited_for() -> None:
    asyncio.run(_a_subscriber_that_falls_behind_is_dropped_not_waited_for())


async def _a_subscriber_that_falls_behind_is_dropped_not_waited_for() -> None:
    feed = ChangeFeed(queue_size=3)
    slow = feed.subscribe()
    keeping_up = feed.subscribe()
    for i in range(5):
        feed.publish(HOSTS, f"h{i}")
        assert await keeping_up.next(1) is not None
    assert slow.dropped and slow.closed and feed.subscribers == 1 and feed.dropped == 1
    # What it had is still read, then its stream ends.
    assert [await slow.next(0.1) for _ in range(3)] != [None] * 3
    assert await slow.next(0.1) is None


def test_closing_the_feed_wakes_and_ends_every_subscriber() -> None:
    asyncio.run(_closing_the_feed_wakes_and_ends_every_subscriber())


async def _closing_the_feed_wakes_and_ends_every_subscriber() -> None:
    feed = ChangeFeed()
    sub = feed.subscribe()
    waiting = asyncio.ensure_future(sub.next(10))
    await asyncio.sleep(0)
    feed.close()
    assert await asyncio.wait_for(waiting, 1) is None
    assert sub.closed and feed.subscribers == 0


def test_a_change_published_from_another_thread_arrives_on_the_loop() -> None:
    asyncio.run(_a_change_published_from_another_thread_arrives_on_the_loop())


async def _a_change_published_from_another_thread_arrives_on_the_loop() -> None:
    feed = ChangeFeed()
    feed.bind(asyncio.get_running_loop())
    sub = feed.subscribe()
    worker = threading.Thread(target=feed.publish, args=("recoveries", "r1"))
    worker.start()
    worker.join()
    got = await sub.next(1)
    assert got is not None and got.subject == "r1"


def test_a_member_hears_only_of_its_own_projects_alarms() -> None:
    member = visible_to(Principal("tenant", Role.MEMBER, "p1"))
    assert member(Change(ALARMS, "a1", "p1"))
    assert not member(Change(ALARMS, "a2", "p2"))
    assert not member(Change(ALARMS, "a3", None))
    assert not member(Change(HOSTS, "h1"))
    for role in (Role.ADMIN, Role.READER):
        sees = visible_to(Principal("op", role, None))
        assert sees(Change(ALARMS, "a2", "p2")) and sees(Change(HOSTS, "h1"))


def test_retries_of_a_recovery_are_numbered_from_its_latest() -> None:
    assert retry_attempt("i1", "recover-i1") == 1
    assert retry_attempt("i1", "recover-i1-retry1") == 2
    assert retry_attempt("i1", "recover-i1-retry12") == 13

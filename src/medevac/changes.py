"""The controller's changes as they happen, broadcast in-process to live subscribers
(the dashboard's event stream).

A block publishes a small ``Change`` (what kind of thing changed, which one, whose
project) the moment it moves it; each subscriber gets it on a bounded queue of its own.
Publishing never waits and costs one check when nobody listens: the heartbeat loop is
never slowed by a dashboard. A subscriber whose queue is full is dropped (its stream
ends, and the page reconnects and reads everything again) rather than holding anything
back. Safe to publish from any thread once ``bind`` named the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The kinds of things that change, as the dashboard's pages group them.
HOSTS = "hosts"
INCIDENTS = "incidents"
RECOVERIES = "recoveries"
ALARMS = "alarms"
AUDIT = "audit"
TOPICS = (HOSTS, INCIDENTS, RECOVERIES, ALARMS, AUDIT)


@dataclass(frozen=True, slots=True)
class Change:
    """``topic`` (one of TOPICS) changed for ``subject`` (a host, an incident, a
    recovery or an alarm id); ``project_id`` names the only project that may see it
    (None: an operator's view, across projects)."""

    topic: str
    subject: str | None = None
    project_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "subject": self.subject,
            "project_id": self.project_id,
            "at": self.at,
            **({"data": self.data} if self.data else {}),
        }


Filter = Callable[[Change], bool]


class Subscription:
    """One subscriber's changes, in order, until it is closed or dropped."""

    def __init__(self, feed: ChangeFeed, accepts: Filter, size: int) -> None:
        self._feed = feed
        self.accepts = accepts
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(maxsize=size)
        self.dropped = False  # it fell behind: what it missed is unknown
        self.closed = False

    def offer(self, change: Change) -> None:
        if self.closed or not self.accepts(change):
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped = True
            self._feed.unsubscribe(self)

    async def next(self, within: float) -> Change | None:
        """The next change, or None after ``within`` s without one or once closed."""
        if self.closed and self.queue.empty():
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), within)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._feed.unsubscribe(self)


class ChangeFeed:
    """Publishers call ``publish``; each live ``Subscription`` gets what its filter
    accepts. ``queue_size`` bounds how far one subscriber may fall behind."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.published = 0
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop subscribers live on: publishes from other threads go through it."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(
        self,
        topic: str,
        subject: str | None = None,
        project_id: str | None = None,
        **data: Any,
    ) -> None:
        """Hand a change to every subscriber; never blocks, never raises."""
        if not self._subs:
            return
        change = Change(topic, subject, project_id, data)
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                self._loop.call_soon_threadsafe(self._deliver, change)
            return
        self._deliver(change)

    def _deliver(self, change: Change) -> None:
        self.published += 1
        for sub in list(self._subs):
            sub.offer(change)

    def subscribe(self, accepts: Filter | None = None) -> Subscription:
        sub = Subscription(self, accepts or (lambda _: True), self.queue_size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            if sub.dropped:
                self.dropped += 1
        if not sub.closed:
            sub.closed = True
            # Wakes a reader waiting on an empty queue; a full one is read to its end.
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    def close(self) -> None:
        """Every subscription ends (the process stops: open streams finish at once)."""
        for sub in list(self._subs):
            self.unsubscribe(sub)

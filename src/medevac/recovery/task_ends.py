"""Nova's word that a server's task ended: a recovery's wait on a server wakes on it.

An evacuation (or a restart) in flight waits for its server to settle somewhere. Read
every ``poll_interval``, that is one call per server in flight per interval: on a
Nova already busy rebuilding, most of the recovery's calls, each taking Nova's time
from the rebuilds. While Nova's versioned notifications are heard, a wait instead
reads its server when Nova says a task on it ended (``task_state`` null), and only
every ``notified_poll_interval`` besides, in case a notification is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any


class TaskEnds:
    def __init__(self, heard: Callable[[], bool] = lambda: False) -> None:
        self.heard = heard  # True while the notification listener is connected
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self.wakes = 0

    def on_instance_notification(self, event_type: str, payload: Mapping[str, Any]) -> None:
        if not event_type.startswith("instance.") or payload.get("task_state") is not None:
            return
        for told in self._watchers.get(str(payload.get("uuid")), ()):
            self.wakes += 1
            told.set()

    @contextlib.contextmanager
    def watching(self, server_id: str) -> Iterator[asyncio.Event]:
        """Watched from before the first read: a task ending while the read is in
        flight is not missed."""
        told = asyncio.Event()
        self._watchers.setdefault(server_id, set()).add(told)
        try:
            yield told
        finally:
            watchers = self._watchers.get(server_id, set())
            watchers.discard(told)
            if not watchers:
                self._watchers.pop(server_id, None)

    async def next_read(self, told: asyncio.Event, poll: float, notified_poll: float) -> bool:
        """Until Nova says the task ended, or the interval passes: ``poll`` when Nova's
        notifications are not heard, ``notified_poll`` when they are. True: Nova said."""
        woken = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(told.wait(), notified_poll if self.heard() else poll)
            woken = True
        told.clear()
        return woken

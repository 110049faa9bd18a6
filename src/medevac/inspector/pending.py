"""Which servers still have state actions planned and not done: a recovery waits on it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable


class PendingCorrections:
    """Counts the actions pending per server (a port's count as its server's)."""

    def __init__(self) -> None:
        self._pending: Counter[str] = Counter()
        self._changed = asyncio.Event()
        # Set once the corrections a dead predecessor left are planned again (after the
        # first topology sync): until then nobody can know what is pending on a server.
        self.resumed = asyncio.Event()

    def add(self, subjects: Iterable[str]) -> None:
        self._pending.update(subjects)

    def done(self, subject: str | None) -> None:
        """One action on ``subject`` ended (done, failed, or never to run)."""
        if subject is None:
            return
        self._pending[subject] -= 1
        if self._pending[subject] <= 0:
            del self._pending[subject]
        self._changed.set()
        self._changed = asyncio.Event()

    async def settled(self, server_id: str) -> None:
        """Wait until no action is pending on this server or its ports."""
        await self.resumed.wait()
        while server_id in self._pending:
            await self._changed.wait()

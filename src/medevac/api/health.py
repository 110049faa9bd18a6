"""What ``/healthz`` and ``/readyz`` check, without a token and without a secret.

Health (is this process fit to keep running): the store answers a real query within
``STORE_TIMEOUT``, the event loop has not stalled lately (a timer's lag over the last
``LOOP_WINDOW``), and the outbox's writes succeed (else alarms are held unsent).
Readiness (is it serving its hosts): the schema is at the newest migration, the
alarms are loaded, the outbox is started and the monitor runs (when hosts are
configured). Reasons name what failed and the error's type, never a URL or its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from sqlalchemy import text

from medevac.monitor.hosts import HostMonitor
from medevac.notifier.notifier import Notifier
from medevac.storage import Database

STORE_TIMEOUT = 2.0  # s: a store slower than this is unhealthy
LOOP_TICK = 0.1  # s: the loop timer's period
LOOP_MAX_LAG = 1.0  # s: a timer this late means the loop stalled
LOOP_WINDOW = 30.0  # s: how long a stall keeps the controller unhealthy


class LoopWatch:
    """A timer on the event loop; how late it woke, over the last ``window`` s."""

    def __init__(self, tick: float = LOOP_TICK, window: float = LOOP_WINDOW) -> None:
        self.tick = tick
        self.window = window
        self._lags: deque[tuple[float, float]] = deque()  # (when, lag), the window's
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the timer (on the running loop), unless it runs already."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            now = loop.time()
            self._lags.append((now, max(0.0, now - expected)))
            while self._lags and self._lags[0][0] < now - self.window:
                self._lags.popleft()

    def worst(self) -> float:
        """The longest lag within the window (s)."""
        now = asyncio.get_running_loop().time()
        lags = [lag for at, lag in self._lags if at >= now - self.window]
        return max(lags, default=0.0)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class Health:
    def __init__(
        self,
        db: Database,
        *,
        notifier: Notifier | None = None,
        monitor: HostMonitor | None = None,
        loop: LoopWatch | None = None,
        store_timeout: float = STORE_TIMEOUT,
        max_lag: float = LOOP_MAX_LAG,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.monitor = monitor
        self.loop = loop or LoopWatch()
        self.store_timeout = store_timeout
        self.max_lag = max_lag
        self._query: asyncio.Future[None] | None = None  # one store query at a time
        self._head: str | None = None

    async def _store(self) -> str | None:
        """None if the store answered a query in time, else why not."""
        if self._query is None or self._query.done():
            self._query = asyncio.ensure_future(asyncio.to_thread(self._select_one))
        try:
            await asyncio.wait_for(asyncio.shield(self._query), self.store_timeout)
        except TimeoutError:
            return f"the store did not answer within {self.store_timeout:g} s"
        except Exception as exc:
            return f"the store does not answer ({type(exc).__name__})"
        return None

    def _select_one(self) -> None:
        with self.db.reading() as s:
            s.execute(text("SELECT 1")).scalar_one()

    async def health(self) -> dict[str, Any]:
        """Every check and the reasons of those that failed."""
        self.loop.start()
        started = time.monotonic()
        store = await self._store()
        checks: dict[str, Any] = {
            "store": {"ok": store is None, "ms": round((time.monotonic() - started) * 1000, 1)}
        }
        reasons = [store] if store else []
        lag = self.loop.worst()
        checks["loop"] = {"ok": lag <= self.max_lag, "worst_lag_ms": round(lag * 1000, 1)}
        if lag > self.max_lag:
            reasons.append(
                f"the event loop stalled {lag:.1f} s within the last {self.loop.window:g} s"
            )
        if self.notifier is not None:
            outbox = self.notifier.outbox.health()
            checks["outbox"] = {"ok": outbox is None}
            if outbox:
                reasons.append(outbox)
        return {"status": "unhealthy" if reasons else "ok", "checks": checks, "reasons": reasons}

    async def readiness(self) -> dict[str, Any]:
        """Whether the controller serves its hosts, and what it still lacks if not."""
        waiting: list[str] = []
        try:
            revision, head = await asyncio.wait_for(
                asyncio.to_thread(self._revisions), self.store_timeout
            )
        except Exception as exc:
            waiting.append(f"the store's schema cannot be read ({type(exc).__name__})")
        else:
            if revision != head:
                waiting.append(f"the store's schema is at {revision}, not {head}")
        if self.notifier is not None:
            if not self.notifier.loaded:
                waiting.append("the alarms are not loaded")
            if not self.notifier.outbox.started:
                waiting.append("the outbox is not started")
        if self.monitor is not None and not self.monitor.running:
            waiting.append("the monitor is not running")
        return {"status": "waiting" if waiting else "ready", "waiting": waiting}

    def _revisions(self) -> tuple[str | None, str | None]:
        if self._head is None:
            self._head = self.db.head_revision()
        return self.db.current_revision(), self._head

    def close(self) -> None:
        self.loop.close()
        if self._query is not None:
            with contextlib.suppress(Exception):
                self._query.cancel()

"""Runs planned state actions against the cloud: in parallel, bounded, retried.

Each action is idempotent by construction (setting a state that is already set
changes nothing), so a retry after an unclear failure is always safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from medevac.cloud.errors import CloudError, Conflict
from medevac.cloud.models import DataPlaneStatus
from medevac.cluster.ownership import Ownership, SoleController
from medevac.inspector.actions import PROCESS_DOWN_REASON, Action, ActionKind


class CloudActions(Protocol):
    async def set_forced_down(self, host: str, forced_down: bool = True) -> Any: ...

    async def reset_state(self, server_id: str, state: str = "error") -> None: ...

    async def set_data_plane_status(self, port_id: str, status: DataPlaneStatus | None) -> Any: ...

    async def set_enabled(self, host: str, enabled: bool, reason: str | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    ok: bool
    attempts: int
    started: float
    ended: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.action.kind.value,
            "target": self.action.target,
            "value": self.action.value,
            "ok": self.ok,
            "attempts": self.attempts,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
        }


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.2  # first wait; doubles each time
    max_backoff: float = 5.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


def _retryable(exc: CloudError) -> bool:
    # 409: the server is mid-task; it settles. 5xx/timeouts: the cloud is busy.
    return exc.transient or isinstance(exc, Conflict)


class ActionExecutor:
    """One executor per controller: a shared bound on concurrent cloud calls."""

    def __init__(
        self,
        cloud: CloudActions,
        *,
        concurrency: int = 32,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        ownership: Ownership | None = None,
    ) -> None:
        self.cloud = cloud
        # A plan is carried out only by its host's owner, under its current epoch.
        self.ownership: Ownership = ownership or SoleController()
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)

    async def _call(self, action: Action) -> None:
        if action.kind is ActionKind.FORCE_DOWN:
            await self.cloud.set_forced_down(action.target, action.value == "true")
        elif action.kind is ActionKind.RESET_STATE:
            await self.cloud.reset_state(action.target, action.value)
        elif action.kind is ActionKind.SERVICE_STATUS:
            enable = action.value == "enabled"
            reason = None if enable else PROCESS_DOWN_REASON
            await self.cloud.set_enabled(action.target, enable, reason)
        else:
            await self.cloud.set_data_plane_status(action.target, DataPlaneStatus(action.value))

    async def run_one(self, action: Action) -> ActionResult:
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    await self._call(action)
            except CloudError as exc:
                if _retryable(exc) and attempt < self.retry.attempts:
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                return ActionResult(action, False, attempt, started, self.clock(), str(exc))
            except Exception as exc:  # a driver bug must become a failed action, not a hang
                error = f"{type(exc).__name__}: {exc}"
                return ActionResult(action, False, attempt, started, self.clock(), error)
            return ActionResult(action, True, attempt, started, self.clock())

    async def run(
        self,
        actions: Iterable[Action],
        on_result: Callable[[ActionResult], None],
        *,
        host: str,
        trace_id: str | None = None,
    ) -> list[ActionResult]:
        """Run the actions on ``host``'s behalf, reporting each result as it lands: a
        force-down first and on its own (it is what turns every server's host_status
        DOWN, so it must not queue behind a hundred resets), then everything else at
        once, within the bound. None runs unless this controller owns ``host``."""
        todo = list(actions)
        if not todo:
            return []
        kinds = sorted({a.kind.value for a in todo})
        if not await self.ownership.authorize(host, "actions", {"kinds": kinds}, trace_id):
            now = self.clock()
            error = f"{self.ownership.member_id} does not own {host} (any more)"
            refused = [ActionResult(a, False, 0, now, now, error) for a in todo]
            for r in refused:
                on_result(r)
            return refused

        async def one(action: Action) -> ActionResult:
            result = await self.run_one(action)
            on_result(result)
            return result

        first = [a for a in todo if a.kind is ActionKind.FORCE_DOWN]
        rest = [a for a in todo if a.kind is not ActionKind.FORCE_DOWN]
        results = [await one(a) for a in first]
        return results + list(await asyncio.gather(*(one(a) for a in rest)))

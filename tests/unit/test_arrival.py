"""Waiting for an evacuated server to arrive: Nova announces the rebuild's end a
moment before its compute moves the server to the new host (finish_evacuation)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from medevac.recovery.runtime import RecoveryRuntime, RecoverySettings
from medevac.recovery.steps import RecoverySteps
from medevac.recovery.task_ends import TaskEnds


class Nova:
    """One server on the failed host; its rebuild ends, then it moves."""

    def __init__(self, ends: TaskEnds) -> None:
        self.ends = ends
        self.host = "failed"
        self.task_state: str | None = "rebuilding"
        self.reads = 0

    async def finish(self) -> None:
        await asyncio.sleep(0.1)
        self.task_state = None  # saved, then announced: instance.rebuild.end
        self.ends.on_instance_notification(
            "instance.rebuild.end", {"uuid": "s1", "task_state": None, "host": "failed"}
        )
        await asyncio.sleep(0.1)
        self.host = "other"  # the resource tracker's finish_evacuation, unannounced

    async def get_server(self, server_id: str) -> Any:
        self.reads += 1
        return SimpleNamespace(host=self.host, status="ACTIVE", task_state=self.task_state)


def test_after_nova_says_the_rebuild_ended_the_arrival_is_read_soon() -> None:
    async def go() -> None:
        ends = TaskEnds(lambda: True)  # notifications heard: the safety net is 5 s
        nova = Nova(ends)
        settings = RecoverySettings(poll_interval=0.05, notified_poll_interval=5.0)
        runtime: Any = dict.fromkeys(("fencer", "store", "emit", "audit", "settled"))
        steps = RecoverySteps(
            RecoveryRuntime(cloud=nova, groups=[], settings=settings, task_ends=ends, **runtime),  # type: ignore[arg-type]
            name="arrival-test",
        )
        finishing = asyncio.ensure_future(nova.finish())
        started = time.monotonic()
        arrived = await steps.arrival("s1", "failed", "ACTIVE")
        took = time.monotonic() - started
        await finishing
        assert arrived["ok"] and arrived["host"] == "other"
        assert took < 2.0, took  # not the 5 s safety net
        assert arrived["reads"] >= 3  # the first, the woken one, and the short polls

    asyncio.run(go())

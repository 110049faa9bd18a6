"""The audit log, written off the event loop, and the verdicts' way to it."""

from __future__ import annotations

import asyncio
from typing import Any

from medevac.changes import AUDIT, ChangeFeed
from medevac.monitor.verdicts import Verdict, VerdictSink
from medevac.storage import Database


class AuditLog:
    """Audit entries written off the event loop, a moment later: the milliseconds
    after a verdict belong to the alarms' outbox."""

    DELAY = 0.05

    def __init__(self, db: Database, changes: ChangeFeed | None = None) -> None:
        self._db = db
        self._changes = changes
        self._tasks: set[asyncio.Future[int]] = set()

    def record(
        self, kind: str, subject: str, actor: str, detail: dict[str, Any], trace_id: str | None
    ) -> None:
        entry = (kind, subject, actor, detail, trace_id)
        asyncio.get_running_loop().call_later(self.DELAY, self._start, entry)

    def _start(self, entry: tuple[str, str, str, dict[str, Any], str | None]) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(self._db.record_audit, *entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._changes is not None:
            changes, subject = self._changes, entry[1]
            task.add_done_callback(lambda _: changes.publish(AUDIT, subject))

    async def drain(self) -> None:
        await asyncio.sleep(self.DELAY)  # entries still waiting for their moment
        await asyncio.gather(*self._tasks, return_exceptions=True)


class VerdictAudit:
    """Every verdict goes to the audit log."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def on_verdict(self, verdict: Verdict) -> None:
        detail = {"subject": verdict.subject, "at": verdict.at, "evidence": verdict.evidence}
        self._audit.record(
            f"verdict.{verdict.kind.value}", verdict.host, "monitor", detail, verdict.trace_id
        )


class VerdictFanout:
    """Hands each verdict to the inspector at once, then to the other sinks.

    The others run on the next loop turn, after the work the inspector started (its
    outbox write, its webhooks).
    """

    def __init__(self, first: VerdictSink, *later: VerdictSink) -> None:
        self.first = first
        self.later = later

    def on_verdict(self, verdict: Verdict) -> None:
        self.first.on_verdict(verdict)
        loop = asyncio.get_running_loop()
        for sink in self.later:
            loop.call_soon(sink.on_verdict, verdict)

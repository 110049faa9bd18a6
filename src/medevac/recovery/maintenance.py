"""Planned maintenance: what an operator and the owners ask of it (start, answer, end),
checked and recorded here; the work itself is the durable workflow in
``maintenance_flow``.

``start`` records the maintenance under this controller's epoch on the host, moves
the host's lifecycle to MAINTENANCE and starts the workflow; ``answer`` records an
owner's answer and wakes the workflow (only a record: not fenced by the epoch, any
controller takes it, the store's state check decides); ``end`` (once no migration is
under way), under the epoch, enables the compute service again, moves the lifecycle
back to UP and tells the owners ``maintenance.complete``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from dbos import DBOS, SetWorkflowID

from medevac.cloud.errors import CloudError
from medevac.cluster.ownership import NotOwner, Ownership
from medevac.notifier.events import Event
from medevac.recovery.maintenance_flow import (
    TOPIC,
    MaintenanceCloud,
    MaintenanceWorkflows,
    workflow_id,
)
from medevac.recovery.maintenance_plan import COMPLETE_EVENT, Answer
from medevac.storage.maintenances import MaintenanceExists, MaintenanceStore, WrongState
from medevac.storage.records import Fence

log = logging.getLogger(__name__)


class Refused(Exception):
    """The maintenance cannot do this now (the host's state, the maintenance's)."""


class NotStarted(Exception):
    """The maintenance's workflow could not be started: the start was undone."""


class NoMaintenance(LookupError):
    """The host has no open maintenance (or the server is not one of it, or not the
    caller's to answer for)."""


class Maintenance:
    def __init__(
        self,
        workflows: MaintenanceWorkflows,
        store: MaintenanceStore,
        cloud: MaintenanceCloud,
        ownership: Ownership,
        *,
        emit: Callable[[list[Event]], Any],
        audit: Callable[[str, str, str, dict[str, Any], str | None], Any],
        host_state: Callable[[str], str],
        lifecycle: Callable[[str, bool, dict[str, Any], str | None], Any],
        on_state: Callable[[str, str, list[str] | None], Any] = lambda host, state, left: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workflows = workflows
        self.store = store
        self.cloud = cloud
        self.ownership = ownership
        self.emit = emit
        self.audit = audit  # kind, subject, actor, detail, trace id (blocking: a thread)
        self.host_state = host_state
        # Moves a host's lifecycle (host, started, detail, trace id): None if it did not.
        self.lifecycle = lifecycle
        self.on_state = on_state  # (host, state, servers left): SCHEDULED and ENDED here
        self.clock = clock

    async def start(
        self, host: str, reason: str, deadline: float | None, by: str
    ) -> dict[str, Any]:
        """Put ``host`` under maintenance; returns its record (SCHEDULED). Refused when
        the host is not in service (UP), MaintenanceExists when it has one open,
        NotOwner when another controller owns it."""
        if not self.ownership.holds(host):  # its lifecycle here may be stale: not ours
            raise NotOwner(self.ownership.member_id, host)
        state = self.host_state(host)
        if state != "UP":
            raise Refused(f"{host} is {state}: a maintenance starts on a host in service")
        mid, trace_id, at = str(uuid.uuid4()), uuid.uuid4().hex, self.clock()
        detail = {"maintenance_id": mid, "reason": reason, "by": by}

        refused: list[Exception] = []

        def write(fence: Fence | None) -> None:
            try:
                self.store.open(mid, host, reason, deadline, at, by, trace_id, fence)
            except MaintenanceExists as exc:  # said as such, not as a refused effect
                refused.append(exc)

        allowed = await self.ownership.authorize(host, "maintenance.start", detail, trace_id, write)
        if refused:
            raise refused[0]
        if not allowed:
            raise NotOwner(self.ownership.member_id, host)
        if self.lifecycle(host, True, detail, trace_id) is None:
            # Lost between the check and now: the maintenance never began.
            await asyncio.to_thread(self._undo, mid)
            raise Refused(
                f"{host} is {self.host_state(host)}: a maintenance starts on a host in service"
            )
        self.on_state(host, "SCHEDULED", None)
        try:
            with SetWorkflowID(workflow_id(mid)):
                await DBOS.start_workflow_async(self.workflows.maintain, mid, host, trace_id)
        except Exception as exc:  # DBOS's database away: undone, nothing left half begun
            log.error("maintenance %s of %s: its workflow did not start: %s", mid, host, exc)
            await asyncio.to_thread(self._undo, mid)
            self.lifecycle(host, False, detail, trace_id)
            self.on_state(host, "ENDED", None)
            why = type(exc).__name__  # the class only: a driver's text may name its URL
            failed = {**detail, "error": why}
            await self._audit("maintenance.start_failed", host, by, failed, trace_id)
            raise NotStarted(
                f"{host}'s maintenance could not start its workflow ({why}): "
                "nothing was changed, try again"
            ) from None
        await self._audit(
            "maintenance.started", host, by, {**detail, "deadline": deadline}, trace_id
        )
        body = await asyncio.to_thread(self.store.get, mid)
        assert body is not None
        return body

    async def answer(
        self, host: str, server_id: str, answer: Answer, by: str, project_id: str | None
    ) -> dict[str, Any]:
        """An owner's answer for one of its servers (``project_id`` None: an admin's, for
        any server). NoMaintenance when there is nothing of the caller's to answer;
        WrongState once the migrations started."""
        body = await asyncio.to_thread(self.store.current, host)
        if body is None:
            raise NoMaintenance(f"{host} has no open maintenance")
        server = next((s for s in body["servers"] if s["server_id"] == server_id), None)
        if server is None or (project_id is not None and server["project_id"] != project_id):
            raise NoMaintenance(f"server {server_id} is not in {host}'s maintenance")
        row = await asyncio.to_thread(
            self.store.answer, body["id"], server_id, answer.value, by, self.clock()
        )
        if row is None:
            raise NoMaintenance(f"server {server_id} is not in {host}'s maintenance")
        detail = {"maintenance_id": body["id"], "server_id": server_id, "answer": answer.value}
        await self._audit("maintenance.answer", host, by, detail, body["trace_id"])
        await self._wake(body["id"], {"answer": server_id})
        return row

    async def end(self, host: str, by: str) -> dict[str, Any]:
        """End the host's maintenance: the service enabled, the lifecycle back to UP,
        ``maintenance.complete`` sent and ``maintenance.ended`` audited, once. A host
        lost meanwhile keeps its recovery's state (its release puts it back). When Nova
        refuses to enable the service, the maintenance is ENDED but the host stays under
        MAINTENANCE, nothing is sent, and CloudError is raised: an end asked again enables
        it and completes that maintenance then. NotOwner when another controller owns
        the host."""
        if not self.ownership.holds(host):  # its lifecycle here may be stale: not ours
            raise NotOwner(self.ownership.member_id, host)
        body = await asyncio.to_thread(self.store.current, host)
        state = self.host_state(host)
        unfinished = None  # ended, but its service not enabled: completed by this end
        if body is None:
            if state != "MAINTENANCE":
                raise NoMaintenance(f"{host} has no open maintenance")
            last = await asyncio.to_thread(self.store.latest, host)
            if last is not None and not last["detail"].get("completed"):
                unfinished = last
        ending = body or unfinished
        was: list[str] = []
        detail = {"maintenance_id": ending["id"] if ending else None, "by": by}
        trace_id = ending["trace_id"] if ending else None

        refused: list[Exception] = []

        def write(fence: Fence | None) -> None:
            assert body is not None
            try:
                was.append(self.store.end(body["id"], by, self.clock(), fence))
            except WrongState as exc:  # said as such, not as a refused effect
                refused.append(exc)

        # Nothing of its own to record (the host's service put back): the effect alone,
        # checked under the epoch like any other.
        effect = write if body is not None else None
        allowed = await self.ownership.authorize(host, "maintenance.end", detail, trace_id, effect)
        if refused:
            raise Refused(str(refused[0]))
        if not allowed:
            raise NotOwner(self.ownership.member_id, host)
        if body is not None and was and was[0] == "SCHEDULED":
            await self._wake(body["id"], {"end": True})
        self.on_state(host, "ENDED", None)
        back = state == "MAINTENANCE"
        if back:
            try:
                await self.cloud.set_enabled(host, True)
            except CloudError as exc:
                failed = {**detail, "error": exc.cloud_message}
                await self._audit("maintenance.enable_failed", host, by, failed, trace_id)
                raise
            self.lifecycle(host, False, detail, trace_id)
        if ending is not None and await asyncio.to_thread(
            self.store.completed, ending["id"], self.clock()
        ):
            self._complete(host, ending, back, trace_id)
            await self._audit(
                "maintenance.ended", host, by, {**detail, "service_enabled": back}, trace_id
            )
        ended = await asyncio.to_thread(self.store.latest, host)
        return {**(ended or {}), "service_enabled": back}

    def _undo(self, maintenance_id: str) -> None:
        """End a maintenance that never began: nothing to complete, nobody to tell."""
        now = self.clock()
        self.store.end(maintenance_id, "medevac", now)
        self.store.completed(maintenance_id, now)

    def _complete(self, host: str, body: dict[str, Any], back: bool, trace_id: str | None) -> None:
        now = self.clock()
        common = {"host": host, "maintenance_id": body["id"]}
        events = [
            Event(
                COMPLETE_EVENT,
                now,
                {
                    **common,
                    "instance_id": s["server_id"],
                    "project_id": s["project_id"],
                    "tenant_id": s["project_id"],
                    "result": s["result"],
                },
                trace_id=trace_id,
            )
            for s in body["servers"]
        ]
        traits = {**common, "service_enabled": back}
        events.append(Event(COMPLETE_EVENT, now, traits, trace_id=trace_id))
        self.emit(events)

    async def _audit(
        self, kind: str, host: str, by: str, detail: dict[str, Any], trace_id: str | None
    ) -> None:
        """Written before the caller is answered: an answer acknowledged is audited."""
        await asyncio.to_thread(self.audit, kind, host, by, detail, trace_id)

    async def _wake(self, maintenance_id: str, message: dict[str, Any]) -> None:
        """Tell the workflow waiting for answers that one came (or an end)."""
        try:
            await DBOS.send_async(workflow_id(maintenance_id), message, TOPIC)
        except Exception as exc:  # it wakes by itself at the deadline anyway
            log.warning("maintenance %s not woken: %s", maintenance_id, exc)

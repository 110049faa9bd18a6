"""Planned maintenance as a durable workflow (DBOS), like a recovery: disable the host,
tell the owners, wait for their answers until the deadline, live-migrate the servers
that go, each verified, then say whether the host is empty. A controller that dies
mid-way resumes it from the last completed step; every effect is fenced by the host's
ownership epoch. The workflow id is ``maintenance-<id>``; each server's migration is a
child workflow ``maintenance-<id>:<server id>``.

The decisions are ``maintenance_plan``'s pure functions; this module only sequences
steps of one effect each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dbos import DBOS, DBOSConfiguredInstance, SetWorkflowID

from medevac.cloud.errors import CloudError, Conflict, InvalidRequest, NotFound
from medevac.cloud.models import ComputeService, Server
from medevac.notifier.events import Event, iso
from medevac.recovery.maintenance_plan import (
    HOST_EMPTY_EVENT,
    HOST_PARTIAL_EVENT,
    HOST_READY_EVENT,
    INTERRUPTED_EVENT,
    MIGRATED_EVENT,
    SCHEDULED_EVENT,
    Answer,
    HostServer,
    MaintenanceState,
    Migration,
    disposition,
    is_ha,
    judge_migration,
    may_migrate,
    outcome,
    plan,
)
from medevac.recovery.runtime import RecoveryRuntime
from medevac.storage.maintenances import MaintenanceStore
from medevac.storage.records import Fence

log = logging.getLogger(__name__)

TOPIC = "maintenance"  # the messages a maintenance workflow waits on (answers, an end)
WAKE_AT_LEAST = 3600.0  # s: a long answer window is waited in slices of this


def workflow_id(maintenance_id: str) -> str:
    return f"maintenance-{maintenance_id}"


class MaintenanceCloud(Protocol):
    async def set_enabled(
        self, host: str, enabled: bool, reason: str | None = None
    ) -> ComputeService: ...

    async def list_host_servers(self, host: str) -> list[Server]: ...

    async def get_server(self, server_id: str) -> Server: ...

    async def live_migrate(self, server_id: str, host: str | None = None) -> None: ...


@dataclass
class MaintenanceRuntime:
    """What the maintenance steps act through, beside the recovery's runtime (ownership,
    events, audit, Nova's task notifications, the groups and their slots)."""

    rt: RecoveryRuntime
    cloud: MaintenanceCloud
    store: MaintenanceStore
    # The host's lifecycle state now (MAINTENANCE while the maintenance holds).
    host_state: Callable[[str], str]
    # A server as Nova just showed it: the inspector's topology takes it.
    seen: Callable[[Server], Any] = lambda server: None
    # A maintenance's state changed (host, state, the servers left once it is over).
    on_state: Callable[[str, str, list[str] | None], Any] = lambda host, state, left: None
    migrate_timeout: float = 300.0
    migrate_attempts: int = 2


@DBOS.dbos_class()
class MaintenanceSteps(DBOSConfiguredInstance):
    """The steps over one runtime; ``name`` identifies it to DBOS on recovery."""

    def __init__(self, runtime: MaintenanceRuntime, name: str = "medevac") -> None:
        self.mrt = runtime
        super().__init__(config_name=name)

    async def _fenced(self, host: str, step: str, write: Callable[[Fence | None], Any]) -> Any:
        """``write`` under this controller's epoch on ``host``; returns what it returned."""
        out: list[Any] = []
        await self.mrt.rt.acting_on(host, step, lambda fence: out.append(write(fence)))
        return out[0] if out else None

    async def _ended(self, maintenance_id: str) -> bool:
        body = await asyncio.to_thread(self.mrt.store.get, maintenance_id)
        assert body is not None, f"maintenance {maintenance_id} not recorded"
        return bool(body["state"] == "ENDED")

    @DBOS.step()
    async def load(self, maintenance_id: str) -> dict[str, Any]:
        body = await asyncio.to_thread(self.mrt.store.get, maintenance_id)
        assert body is not None, f"maintenance {maintenance_id} not recorded"
        return {
            "reason": body["reason"],
            "deadline_at": body["deadline_at"],
            "ended": body["state"] == "ENDED",
        }

    @DBOS.step()
    async def ended(self, maintenance_id: str) -> bool:
        """Whether the maintenance was ended (by an operator) meanwhile."""
        return await self._ended(maintenance_id)

    @DBOS.step()
    async def now(self) -> float:
        return time.time()

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def disable(self, maintenance_id: str, host: str, reason: str) -> bool:
        """Disable the host's compute service unless the maintenance ended; False: it
        ended, the service is left (or put back) enabled. An end recorded while Nova
        disabled it is seen after: its own enable may have come first, so it is enabled
        again here (unless the host was lost: then its release decides)."""
        if await self._ended(maintenance_id):
            return False
        await self.mrt.rt.acting_on(host, "maintenance.disable")
        await self.mrt.cloud.set_enabled(host, False, reason)
        if not await self._ended(maintenance_id):
            return True
        if self.mrt.host_state(host) in ("MAINTENANCE", "UP"):
            await self.mrt.rt.acting_on(host, "maintenance.enable")
            await self.mrt.cloud.set_enabled(host, True)
        return False

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def snapshot(self, host: str) -> list[dict[str, Any]]:
        """The host's servers as Nova lists them now."""
        servers = await self.mrt.cloud.list_host_servers(host)
        return [
            {
                "id": s.id,
                "name": s.name,
                "project_id": s.project_id,
                "vm_state": s.vm_state or "",
                "metadata": dict(s.metadata),
            }
            for s in servers
        ]

    @DBOS.step()
    async def record_servers(
        self, maintenance_id: str, host: str, servers: list[dict[str, Any]]
    ) -> None:
        store = self.mrt.store
        await self._fenced(
            host,
            "maintenance.servers",
            lambda fence: store.put_servers(maintenance_id, servers, fence),
        )

    @DBOS.step()
    async def emit(self, events: list[dict[str, Any]], trace_id: str) -> None:
        now = time.time()
        self.mrt.rt.emit(
            [
                Event(e["type"], now, e["traits"], trace_id=trace_id, severity=e["severity"])
                for e in events
            ]
        )

    @DBOS.step()
    async def audit(self, kind: str, host: str, detail: dict[str, Any], trace_id: str) -> None:
        await asyncio.to_thread(self.mrt.rt.audit, kind, host, detail, trace_id)

    @DBOS.step()
    async def answered(self, maintenance_id: str) -> dict[str, str]:
        return await asyncio.to_thread(self.mrt.store.answers, maintenance_id)

    @DBOS.step()
    async def host_state(self, host: str) -> str:
        return self.mrt.host_state(host)

    @DBOS.step()
    async def move(
        self,
        maintenance_id: str,
        host: str,
        to: str,
        allowed: list[str],
        detail: dict[str, Any],
    ) -> str | None:
        """The maintenance moved to ``to`` from one of ``allowed``: the state it was in,
        or None (it was in none of them: ended meanwhile)."""
        store, at = self.mrt.store, time.time()
        was: str | None = await self._fenced(
            host,
            f"maintenance.{to.lower()}",
            lambda fence: store.move(
                maintenance_id, to, at, allowed=allowed, detail=detail, fence=fence
            ),
        )
        if was is not None:
            self.mrt.on_state(host, to, detail.get("servers_left"))
        return was

    @DBOS.step()
    async def record_server(
        self, maintenance_id: str, host: str, server_id: str, fields: dict[str, Any]
    ) -> None:
        store, at = self.mrt.store, time.time()
        await self._fenced(
            host,
            f"maintenance.server.{fields['result']}",
            lambda fence: store.set_server(maintenance_id, server_id, at=at, fence=fence, **fields),
        )

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def live_migrate(self, host: str, server_id: str) -> str:
        """Ask Nova to live-migrate the server away, unless it left or is moving."""
        await self.mrt.rt.acting_on(host, "maintenance.live_migrate")
        cloud = self.mrt.cloud
        try:
            server = await cloud.get_server(server_id)
        except NotFound:
            return "deleted"
        if server.host != host:
            return "moved"
        if server.task_state is not None:
            return "busy"  # its own migration, asked before a restart, or another task
        try:
            await cloud.live_migrate(server_id)
        except Conflict:
            return "busy"
        except InvalidRequest as exc:  # no valid host, the source refused, ...
            return f"refused: {exc.cloud_message}"
        return "requested"

    @DBOS.step()
    async def migrated(self, host: str, server_id: str) -> dict[str, Any]:
        """Wait (bounded) until the server runs on another host, or Nova gave up."""
        m = self.mrt
        r = m.rt
        deadline = time.monotonic() + m.migrate_timeout
        last: dict[str, Any] = {}
        ending = False
        with r.task_ends.watching(server_id) as told:
            while time.monotonic() < deadline:
                state = m.host_state(host)
                if state != "MAINTENANCE":  # lost meanwhile: its recovery is in charge
                    return {"ok": False, "why": f"the host is {state}", **last}
                try:
                    s = await m.cloud.get_server(server_id)
                except NotFound:
                    return {"ok": False, "why": "the server was deleted"}
                except CloudError as exc:
                    last = {"error": str(exc)}
                    await asyncio.sleep(r.settings.poll_interval)
                    continue
                last = {"host": s.host, "status": s.status, "task_state": s.task_state}
                seen = judge_migration(s.host, s.status, s.task_state, host)
                if seen is Migration.ARRIVED:
                    m.seen(s)
                    return {"ok": True, **last}
                if seen is Migration.FAILED:
                    return {"ok": False, "why": "in ERROR on the destination", **last}
                if seen is Migration.ROLLED_BACK:
                    m.seen(s)
                    return {"ok": False, "why": "Nova put it back: the migration failed", **last}
                woken = await r.next_read(told, ending=ending)
                ending = ending or woken
        return {"ok": False, "why": f"not on another host within {m.migrate_timeout:g} s", **last}

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def left_on_host(self, host: str) -> list[str]:
        """The servers Nova lists on the host now."""
        servers = await self.mrt.cloud.list_host_servers(host)
        for s in servers:
            self.mrt.seen(s)
        return [s.id for s in servers]


@DBOS.dbos_class()
class MaintenanceWorkflows(DBOSConfiguredInstance):
    def __init__(self, steps: MaintenanceSteps, name: str = "medevac") -> None:
        self.steps = steps
        self.groups = steps.mrt.rt.host_groups
        super().__init__(config_name=name)

    @DBOS.workflow()
    async def maintain(self, maintenance_id: str, host: str, trace_id: str) -> dict[str, Any]:
        st = self.steps
        wid = str(DBOS.workflow_id)
        st.mrt.rt.pin(wid, host)
        group = await self.groups.fresh(host)
        m = await st.load(maintenance_id)
        if m.get("ended"):  # ended before it began: nothing done, nobody told
            return {"state": "ENDED"}
        deadline: float | None = m["deadline_at"]
        common = {"host": host, "maintenance_id": maintenance_id}

        # 1. Disabled (owners see host_status MAINTENANCE), the servers found, told;
        # each only while it was not ended meanwhile.
        reason = f"medevac maintenance: {m['reason']}"[:255]
        if not await st.disable(maintenance_id, host, reason):
            return {"state": "ENDED"}
        found = [HostServer(**s) for s in await st.snapshot(host)]
        rows = [
            {
                "server_id": s.id,
                "name": s.name,
                "project_id": s.project_id,
                "ha": is_ha(s.metadata, group),
            }
            for s in found
        ]
        await st.record_servers(maintenance_id, host, rows)
        when = iso(deadline) if deadline is not None else ""
        told = [
            {
                "type": SCHEDULED_EVENT,
                "severity": "moderate",
                "traits": {
                    "instance_id": s.id,
                    "project_id": s.project_id,
                    "tenant_id": s.project_id,
                    "host": host,
                    "maintenance_id": maintenance_id,
                    "state": MaintenanceState.SCHEDULED.value,
                    "reason": m["reason"],
                    "deadline": when,
                    "planned": disposition(s, group, None)[0].value,
                    "answer_path": f"/v1/hosts/{host}/maintenance/answers",
                },
            }
            for s in found
        ]
        if await st.ended(maintenance_id):  # after its maintenance.complete: no news
            return {"state": "ENDED"}
        if told:
            await st.emit(told, trace_id)
        await st.audit(
            "maintenance.scheduled",
            host,
            {**common, "servers": len(found), "deadline": when, "group": group.name},
            trace_id,
        )

        # 2. Owners answer until the deadline (or all of them have).
        ids = [s.id for s in found]
        while True:
            answers = await st.answered(maintenance_id)
            now = await st.now()
            if may_migrate(now, deadline, ids, set(answers)):
                break
            assert deadline is not None
            message = await DBOS.recv_async(TOPIC, min(deadline - now, WAKE_AT_LEAST))
            if isinstance(message, dict) and message.get("end"):
                break  # ended while scheduled: the move below finds it ENDED

        # 3. The migrations, unless ended meanwhile or the host was lost.
        if await st.host_state(host) != "MAINTENANCE":
            lost = {"why": "the host was lost: its recovery took over"}
            if await st.move(maintenance_id, host, "INTERRUPTED", ["SCHEDULED"], lost):
                await st.emit([_host_event(INTERRUPTED_EVENT, common, lost, "critical")], trace_id)
            return {"state": "INTERRUPTED"}
        was = await st.move(maintenance_id, host, "MIGRATING", ["SCHEDULED"], {})
        if was is None:
            return {"state": "ENDED"}
        answers = await st.answered(maintenance_id)
        moving, left = plan(found, {k: Answer(v) for k, v in answers.items()}, group)
        for sid, why in left.items():
            await st.record_server(
                maintenance_id, host, sid, {"result": "left", "detail": {"why": why}}
            )
        for s in moving:
            await st.record_server(maintenance_id, host, s.id, {"result": "queued"})
        handles = []
        for s in moving:  # all at once, in priority order; each waits for a group slot
            server = {"server_id": s.id, "name": s.name, "project_id": s.project_id}
            with SetWorkflowID(f"{wid}:{s.id}"):
                handles.append(
                    await DBOS.start_workflow_async(
                        self.migrate_server, maintenance_id, host, server, trace_id
                    )
                )
        results: list[dict[str, Any]] = [await h.get_result() for h in handles]

        # 4. What is left on the host says how it ended.
        on_host = await st.left_on_host(host)
        failed = [r["server_id"] for r in results if not r["ok"]]
        interrupted = await st.host_state(host) != "MAINTENANCE"
        state = outcome(len(on_host), len(failed), interrupted)
        summary = {
            "migrated": len(results) - len(failed),
            "failed": failed,
            "servers_left": on_host,
        }
        await st.move(maintenance_id, host, state.value, ["MIGRATING"], summary)
        event_type = {
            MaintenanceState.EMPTY: HOST_EMPTY_EVENT,
            MaintenanceState.READY: HOST_READY_EVENT,
            MaintenanceState.PARTIAL: HOST_PARTIAL_EVENT,
            MaintenanceState.INTERRUPTED: INTERRUPTED_EVENT,
        }[state]
        counts = {
            "migrated": summary["migrated"],
            "failed": len(failed),
            "servers_left": len(on_host),
        }
        severity = (
            "moderate" if state in (MaintenanceState.EMPTY, MaintenanceState.READY) else "critical"
        )
        await st.emit([_host_event(event_type, common, counts, severity)], trace_id)
        await st.audit(f"maintenance.{state.value.lower()}", host, {**common, **summary}, trace_id)
        return {"state": state.value, **summary}

    @DBOS.workflow()
    async def migrate_server(
        self, maintenance_id: str, host: str, server: dict[str, Any], trace_id: str
    ) -> dict[str, Any]:
        st = self.steps
        st.mrt.rt.pin(str(DBOS.workflow_id), host)
        sid = server["server_id"]
        group = await self.groups.fresh(host)
        slots = st.mrt.rt.slots(dataclasses.replace(group, name=f"maintenance/{group.name}"))
        async with slots:
            moved = await self._move(maintenance_id, host, sid)
            await st.record_server(maintenance_id, host, sid, {**moved, "ended": True})
        ok = moved["result"] in ("migrated", "already-moved")
        traits = {
            "instance_id": sid,
            "project_id": server["project_id"],
            "tenant_id": server["project_id"],
            "from_host": host,
            "maintenance_id": maintenance_id,
            "result": moved["result"],
        }
        if ok:
            traits["to_host"] = moved["to_host"]
        else:
            traits["why"] = moved["detail"].get("why", "")
        event = {
            "type": MIGRATED_EVENT,
            "traits": traits,
            "severity": "moderate" if ok else "critical",
        }
        await st.emit([event], trace_id)
        return {"server_id": sid, "ok": ok, "to": moved.get("to_host")}

    async def _move(self, maintenance_id: str, host: str, sid: str) -> dict[str, Any]:
        """Live-migrate, a bounded number of times, until the server runs elsewhere."""
        st = self.steps
        if await st.host_state(host) != "MAINTENANCE":
            why = "the host was lost: its recovery took over"
            return {"result": "interrupted", "attempts": 0, "detail": {"why": why}}
        await st.record_server(maintenance_id, host, sid, {"result": "migrating", "started": True})
        why = "not tried"
        attempts = 0
        for _ in range(st.mrt.migrate_attempts):
            attempts += 1
            asked = await st.live_migrate(host, sid)
            if asked == "deleted":
                return {"result": "failed", "attempts": attempts, "detail": {"why": "deleted"}}
            if asked.startswith("refused"):
                why = asked
                await DBOS.sleep_async(1.0)
                continue
            arrived = await st.migrated(host, sid)
            if arrived["ok"]:
                result = "already-moved" if asked == "moved" else "migrated"
                return {
                    "result": result,
                    "to_host": arrived["host"],
                    "attempts": attempts,
                    "detail": {"asked": asked},
                }
            why = arrived["why"]
            if await st.host_state(host) != "MAINTENANCE":
                return {"result": "interrupted", "attempts": attempts, "detail": {"why": why}}
        return {"result": "failed", "attempts": attempts, "detail": {"why": why}}


def _host_event(
    event_type: str, common: dict[str, Any], traits: dict[str, Any], severity: str
) -> dict[str, Any]:
    return {"type": event_type, "traits": {**common, **traits}, "severity": severity}

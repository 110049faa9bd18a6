"""A recovery's steps: each one effect (one call, or one bounded wait), recorded by
DBOS so a resumed workflow does not do it twice. Idempotent: a step that ran but was
not recorded runs again. The decisions are in ``policy``; the sequence in
``workflows``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from dbos import DBOS, DBOSConfiguredInstance

from medevac.cloud.errors import CloudError, ComputeServiceInUse, Conflict, NotFound
from medevac.cloud.models import DataPlaneStatus
from medevac.notifier.events import Event
from medevac.recovery.policy import Arrival, Restart, judge_arrival, restart_action, runs
from medevac.recovery.runtime import RecoveryRuntime
from medevac.storage.records import Fence

REBUILDING = frozenset({"rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"})


@DBOS.dbos_class()
class RecoverySteps(DBOSConfiguredInstance):
    """The steps over one runtime; ``name`` identifies it to DBOS on recovery."""

    def __init__(self, runtime: RecoveryRuntime, name: str = "medevac") -> None:
        self.rt = runtime
        super().__init__(config_name=name)

    # -- records and events ---------------------------------------------------------

    @DBOS.step()
    async def record(
        self,
        recovery_id: str,
        incident_id: str,
        host: str,
        level: int,
        state: str,
        detail: dict[str, Any],
        ended: bool,
        trace_id: str,
    ) -> None:
        r = self.rt
        at = time.time()

        def write(fence: Fence | None) -> None:
            r.store.put(recovery_id, incident_id, host, level, state, at, detail, ended, fence)

        await r.acting_on(host, f"record.{state.lower()}", write)
        if r.progress is not None:
            r.progress(incident_id, recovery_id, state, at, ended)
        await asyncio.to_thread(
            r.audit,
            f"recovery.{state.lower()}",
            host,
            {"recovery_id": recovery_id, "level": level, **detail},
            trace_id,
        )

    @DBOS.step()
    async def event(
        self, event_type: str, traits: dict[str, Any], severity: str, trace_id: str
    ) -> None:
        self.rt.emit([Event(event_type, time.time(), traits, trace_id=trace_id, severity=severity)])

    @DBOS.step()
    async def record_evacuation(
        self,
        recovery_id: str,
        server_id: str,
        name: str,
        from_host: str,
        result: str,
        to_host: str | None,
        attempts: int,
        detail: dict[str, Any],
        ended: bool,
    ) -> None:
        at = time.time()

        def write(fence: Fence | None) -> None:
            self.rt.store.put_evacuation(
                recovery_id,
                server_id,
                name,
                from_host,
                result=result,
                at=at,
                to_host=to_host,
                attempts=attempts,
                detail=detail,
                ended=ended,
                fence=fence,
            )

        await self.rt.acting_on(from_host, f"record.evacuation.{result}", write)
        if self.rt.evacuation_progress is not None:
            self.rt.evacuation_progress(recovery_id, server_id, result)

    # -- the host -------------------------------------------------------------------

    @DBOS.step()
    async def fence(self, host: str) -> dict[str, Any]:
        await self.rt.acting_on(host, "fence")
        result = await self.rt.fencer.fence(host)
        return {**asdict(result), "ended_at": time.time()}

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def force_down(self, host: str) -> None:
        await self.rt.acting_on(host, "force_down")
        await self.rt.cloud.set_forced_down(host, True)

    @DBOS.step()
    async def wait_nova_down(self, host: str) -> bool:
        """Level 3: wait (bounded) until Nova itself reports the service down."""
        r = self.rt
        deadline = time.monotonic() + r.settings.nova_down_timeout
        while time.monotonic() < deadline:
            if (await r.cloud.get_compute_service(host)).state == "down":
                return True
            await asyncio.sleep(r.settings.poll_interval)
        return False

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def disable(self, host: str, reason: str) -> None:
        await self.rt.acting_on(host, "disable")
        await self.rt.cloud.set_enabled(host, False, reason)

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def snapshot(self, host: str, before: dict[str, str]) -> list[dict[str, Any]]:
        """The host's servers as Nova lists them now, with their state before the fault."""
        servers = await self.rt.cloud.list_host_servers(host)
        return [
            {
                "id": s.id,
                "name": s.name,
                "vm_state": before.get(s.id) or s.vm_state or "",
                "metadata": dict(s.metadata),
                "project_id": s.project_id,
            }
            for s in servers
        ]

    @DBOS.step()
    async def compute_restart(self, host: str) -> dict[str, Any]:
        """Ask the agent once, then wait (bounded) until its heartbeats say nova-compute
        runs."""
        r = self.rt
        assert r.restart_compute is not None and r.compute_alive is not None
        await r.acting_on(host, "compute_restart")
        if not r.restart_compute(host):
            return {"ok": False, "why": "the host's agent is not heard from"}
        deadline = time.monotonic() + r.settings.compute_restart_wait
        while time.monotonic() < deadline:  # the agent's heartbeats say, 10 a second
            if r.compute_alive(host):
                return {"ok": True}
            await asyncio.sleep(min(r.settings.poll_interval, 0.2))
        return {"ok": False, "why": f"not running {r.settings.compute_restart_wait:g} s later"}

    # -- one server -----------------------------------------------------------------

    @DBOS.step()
    async def settle(self, server_id: str) -> None:
        """The inspector's reset and port updates on the server land first."""
        await self.rt.settled(server_id)

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def evacuate(
        self, server_id: str, failed_host: str, destination: str | None, shared: bool
    ) -> str:
        """Ask Nova to evacuate, unless the server already left or is being rebuilt."""
        await self.rt.acting_on(failed_host, "evacuate")
        cloud = self.rt.cloud
        server = await cloud.get_server(server_id)
        if server.host != failed_host:
            return "moved"
        if server.task_state in REBUILDING:
            return "in-progress"
        try:
            await cloud.evacuate(server_id, destination, shared)
        except ComputeServiceInUse:
            # Nova still believes the source is up: fencing or force-down did not
            # happen. Never papered over: the recovery stops for this server.
            return "service-in-use"
        except Conflict:
            return "conflict"  # a task is running on it; wait and look again
        return "requested"

    @DBOS.step()
    async def arrival(self, server_id: str, failed_host: str, expected: str) -> dict[str, Any]:
        """Wait (bounded) until the server runs elsewhere in its expected state."""
        r = self.rt
        deadline = time.monotonic() + r.settings.evacuate_timeout
        stop_asked = False
        # How the arrival was seen: reads made, and whether the last one followed Nova's
        # word that the task ended (else the safety-net interval, or the first read).
        last: dict[str, Any] = {}
        reads, woken, ending = 0, False, False
        with r.task_ends.watching(server_id) as told:
            while time.monotonic() < deadline:
                reads += 1
                try:
                    s = await r.cloud.get_server(server_id)
                except NotFound:
                    return {"ok": False, "why": "the server was deleted"}
                except CloudError as exc:
                    last = {"error": str(exc)}
                    await asyncio.sleep(r.settings.poll_interval)
                    continue
                last = {"host": s.host, "status": s.status, "task_state": s.task_state}
                seen = judge_arrival(
                    s.host, s.status, s.task_state, failed_host, expected, stop_asked=stop_asked
                )
                if seen is Arrival.ARRIVED:
                    return {"ok": True, **last, "reads": reads, "woken_by_nova": woken}
                if seen is Arrival.FAILED:
                    return {"ok": False, "why": "rebuilt in ERROR", **last}
                if seen is Arrival.STOP_IT:
                    await r.acting_on(failed_host, "stop")
                    await r.cloud.stop_server(server_id)  # it was stopped before the fault
                    stop_asked = True
                # Nova says the rebuild ended before its compute moves the server to its
                # new host (the resource tracker's finish_evacuation): after that word,
                # read at the short interval, not the 5 s safety net's.
                woken = await r.next_read(told, ending=ending)
                ending = ending or woken
        return {"ok": False, "why": f"not {expected} elsewhere in time", **last}

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def ports_up(self, server_id: str, failed_host: str) -> int:
        """The server runs on a healthy host again: its ports' data plane is back. The
        inspector knows which ports it set DOWN and what they were; without it (no open
        incident), every port of the server that is DOWN goes ACTIVE."""
        r = self.rt
        await r.acting_on(failed_host, "ports_up")
        if r.restore_ports is not None:
            restored = await r.restore_ports(failed_host, server_id)
            if restored is not None:
                return restored
        ports = await r.cloud.list_server_ports(server_id)
        down = [p for p in ports if p.data_plane_status is DataPlaneStatus.DOWN]
        await asyncio.gather(
            *(r.cloud.set_data_plane_status(p.id, DataPlaneStatus.ACTIVE) for p in down)
        )
        return len(down)

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
    async def server_facts(self, server_id: str) -> dict[str, Any]:
        s = await self.rt.cloud.get_server(server_id)
        return {"host": s.host, "status": s.status, "power": s.power_state, "metadata": s.metadata}

    @DBOS.step()
    async def restart_attempt(self, host: str, server_id: str) -> str:
        """Start a server Nova stopped, hard-reboot one whose domain is dead; idempotent."""
        cloud = self.rt.cloud
        s = await cloud.get_server(server_id)
        action = restart_action(s.status, s.power_state, s.task_state)
        if action in (Restart.RUNNING, Restart.BUSY):
            return action.value
        await self.rt.acting_on(host, "restart")
        try:
            if action is Restart.START:
                await cloud.start_server(server_id)
                return "started"
            await cloud.reboot_server(server_id, hard=True)
        except Conflict:
            return Restart.BUSY.value
        return "rebooted"

    @DBOS.step()
    async def running(self, server_id: str) -> dict[str, Any]:
        """Wait (bounded) until Nova shows the server running."""
        r = self.rt
        deadline = time.monotonic() + r.settings.restart_timeout
        last: dict[str, Any] = {}
        with r.task_ends.watching(server_id) as told:
            while time.monotonic() < deadline:
                s = await r.cloud.get_server(server_id)
                last = {"status": s.status, "power": s.power_state, "task_state": s.task_state}
                if runs(s.status, s.power_state, s.task_state):
                    return {"ok": True, **last}
                await r.next_read(told)
        return {"ok": False, **last}

"""Host recovery as durable workflows (DBOS): fence, force down, evacuate, verify,
disable, record. A controller that dies mid-recovery resumes it on restart from the
last completed step; every step is idempotent because a step that ran but was not
recorded runs again. One recovery per incident by construction: the workflow id is
``recover-<incident id>``, and each server's evacuation is a child workflow whose
id is ``<recovery id>:<server id>``.

DBOS keeps workflows in its own system database; the ``recoveries`` and
``evacuations`` tables are the operator's view of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from dbos import DBOS, SetWorkflowID

from medevac.cloud.errors import CloudError, ComputeServiceInUse, Conflict, NotFound
from medevac.cloud.models import ComputeService, DataPlaneStatus, Port, Server
from medevac.notifier.events import Event
from medevac.recovery.fence import Fencer
from medevac.recovery.policy import (
    HostGroup,
    Level,
    ServerAction,
    ServerFacts,
    destinations,
    group_of,
    order_key,
    plan,
    server_action,
)
from medevac.recovery.task_ends import TaskEnds
from medevac.storage.records import RecoveryStore

log = logging.getLogger(__name__)

# Bump when a change to the workflows below would not replay an older recording.
APP_VERSION = "medevac-recovery-3"
REBUILDING = frozenset({"rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"})


class Described(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...


S = TypeVar("S", bound=Described)


class RecoveryCloud(Protocol):
    async def set_forced_down(self, host: str, forced_down: bool = True) -> ComputeService: ...

    async def set_enabled(
        self, host: str, enabled: bool, reason: str | None = None
    ) -> ComputeService: ...

    async def get_compute_service(self, host: str) -> ComputeService: ...

    async def list_host_servers(self, host: str) -> list[Server]: ...

    async def get_server(self, server_id: str) -> Server: ...

    async def evacuate(
        self, server_id: str, host: str | None = None, on_shared_storage: bool = False
    ) -> None: ...

    async def stop_server(self, server_id: str) -> None: ...

    async def start_server(self, server_id: str) -> None: ...

    async def reboot_server(self, server_id: str, hard: bool = True) -> None: ...

    async def list_server_ports(self, server_id: str) -> list[Port]: ...

    async def set_data_plane_status(self, port_id: str, status: DataPlaneStatus | None) -> Port: ...


@dataclass(frozen=True)
class RecoverySettings:
    evacuate_timeout: float = 120.0  # one server, request to arrival
    evacuate_attempts: int = 2  # per destination
    poll_interval: float = 0.5
    # A server waited on is read this often while Nova's notifications are heard
    # (they wake the wait when its task ends): a safety net for a lost notification.
    notified_poll_interval: float = 5.0
    restart_timeout: float = 60.0  # one server restart, request to running
    restart_attempts: int = 3
    nova_down_timeout: float = 300.0  # level 3: how long to wait for Nova to see it
    compute_restart_attempts: int = 3  # nova-compute restarts asked of the agent
    compute_restart_wait: float = 30.0  # per attempt: until the agent says it runs (s)


@dataclass
class RecoveryRuntime:
    """What the workflows' steps use; set once per process before DBOS launches."""

    cloud: RecoveryCloud
    fencer: Fencer
    store: RecoveryStore
    groups: Sequence[HostGroup]
    settings: RecoverySettings
    emit: Callable[[list[Event]], Any]
    audit: Callable[[str, str, dict[str, Any], str | None], Any]
    # Waits until the inspector's state actions on a server and its ports are done.
    settled: Callable[[str], Awaitable[None]]
    # Told (incident id, recovery id, when) as a recovery ends: its incident then
    # follows the cloud, and the profiler exports the fault.
    ended: Callable[[str, str, float], Any] | None = None
    # Asks a host's agent to restart nova-compute (False: the agent is not heard), and
    # what the agent last said of it; None when restarts are not configured.
    restart_compute: Callable[[str], bool] | None = None
    compute_alive: Callable[[str], bool | None] | None = None
    # Nova's notifications of tasks ending (wired to the listener when there is one).
    task_ends: TaskEnds = field(default_factory=TaskEnds)
    # Puts back the ports the inspector set DOWN on a server of a failed host (how
    # many; None: it knows nothing of that host).
    restore_ports: Callable[[str, str], Awaitable[int | None]] | None = None
    # Evacuation slots per host group, shared by the group's recoveries (in-process:
    # a resumed workflow takes a slot again, so nothing durable is needed).
    _slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    async def next_read(self, told: asyncio.Event, *, ending: bool = False) -> bool:
        """``ending``: Nova already said the task ended, the rest follows within moments."""
        s = self.settings
        patient = s.poll_interval if ending else s.notified_poll_interval
        return await self.task_ends.next_read(told, s.poll_interval, patient)

    def slots(self, group: HostGroup) -> asyncio.Semaphore:
        if group.name not in self._slots:
            self._slots[group.name] = asyncio.Semaphore(max(1, group.concurrency))
        return self._slots[group.name]


_runtime: RecoveryRuntime | None = None


def install(runtime: RecoveryRuntime) -> None:
    global _runtime
    _runtime = runtime


def rt() -> RecoveryRuntime:
    if _runtime is None:
        raise RuntimeError("recovery runtime not installed")
    return _runtime


# -- steps ----------------------------------------------------------------------------


@DBOS.step()
async def record_step(
    recovery_id: str,
    incident_id: str,
    host: str,
    level: int,
    state: str,
    detail: dict[str, Any],
    ended: bool,
    trace_id: str,
) -> None:
    r = rt()
    at = time.time()
    await asyncio.to_thread(
        r.store.put, recovery_id, incident_id, host, level, state, at, detail, ended
    )
    if ended and r.ended is not None:
        r.ended(incident_id, recovery_id, at)
    await asyncio.to_thread(
        r.audit,
        f"recovery.{state.lower()}",
        host,
        {"recovery_id": recovery_id, "level": level, **detail},
        trace_id,
    )


@DBOS.step()
async def event_step(event_type: str, traits: dict[str, Any], severity: str, trace_id: str) -> None:
    rt().emit([Event(event_type, time.time(), traits, trace_id=trace_id, severity=severity)])


@DBOS.step()
async def fence_step(host: str) -> dict[str, Any]:
    result = await rt().fencer.fence(host)
    return {**asdict(result), "ended_at": time.time()}


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
async def force_down_step(host: str) -> None:
    await rt().cloud.set_forced_down(host, True)


@DBOS.step()
async def wait_nova_down_step(host: str) -> bool:
    r = rt()
    deadline = time.monotonic() + r.settings.nova_down_timeout
    while time.monotonic() < deadline:
        if (await r.cloud.get_compute_service(host)).state == "down":
            return True
        await asyncio.sleep(r.settings.poll_interval)
    return False


@DBOS.step()
async def settle_step(server_id: str) -> None:
    await rt().settled(server_id)


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
async def snapshot_step(host: str, before: dict[str, str]) -> list[dict[str, Any]]:
    """The host's servers as Nova lists them now, with their state before the fault."""
    servers = await rt().cloud.list_host_servers(host)
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


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
async def disable_step(host: str, reason: str) -> None:
    await rt().cloud.set_enabled(host, False, reason)


@DBOS.step()
async def evacuation_record_step(
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
    await asyncio.to_thread(
        rt().store.put_evacuation,
        recovery_id,
        server_id,
        name,
        from_host,
        result=result,
        at=time.time(),
        to_host=to_host,
        attempts=attempts,
        detail=detail,
        ended=ended,
    )


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
async def evacuate_step(
    server_id: str, failed_host: str, destination: str | None, shared: bool
) -> str:
    """Ask Nova to evacuate, unless the server already left or is being rebuilt."""
    cloud = rt().cloud
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


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
async def ports_up_step(server_id: str, failed_host: str) -> int:
    """The server runs on a healthy host again: its ports' data plane is back. The
    inspector knows which ports it set DOWN and what they were; without it (no open
    incident), every port of the server that is DOWN goes ACTIVE."""
    r = rt()
    if r.restore_ports is not None:
        restored = await r.restore_ports(failed_host, server_id)
        if restored is not None:
            return restored
    cloud = r.cloud
    ports = await cloud.list_server_ports(server_id)
    down = [p for p in ports if p.data_plane_status is DataPlaneStatus.DOWN]
    await asyncio.gather(*(cloud.set_data_plane_status(p.id, DataPlaneStatus.ACTIVE) for p in down))
    return len(down)


@DBOS.step()
async def arrival_step(server_id: str, failed_host: str, expected: str) -> dict[str, Any]:
    """Wait (bounded) until the server runs elsewhere in its expected state."""
    r = rt()
    deadline = time.monotonic() + r.settings.evacuate_timeout
    stopped_it = False
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
            moved = s.host not in (None, failed_host) and s.task_state is None
            if moved and s.status == expected:
                return {"ok": True, **last, "reads": reads, "woken_by_nova": woken}
            if moved and expected == "SHUTOFF" and s.status == "ACTIVE" and not stopped_it:
                await r.cloud.stop_server(server_id)  # it was stopped before the fault
                stopped_it = True
            elif moved and s.status == "ERROR":
                return {"ok": False, "why": "rebuilt in ERROR", **last}
            # Nova says the rebuild ended before its compute moves the server to its
            # new host (the resource tracker's finish_evacuation): after that word,
            # read at the short interval, not the 5 s safety net's.
            woken = await r.next_read(told, ending=ending)
            ending = ending or woken
    return {"ok": False, "why": f"not {expected} elsewhere in time", **last}


# -- workflows ------------------------------------------------------------------------


@DBOS.workflow()
async def evacuate_server(
    recovery_id: str,
    failed_host: str,
    server: dict[str, Any],
    dests: list[str | None],
    shared: bool,
    attempts_per: int,
    trace_id: str,
) -> dict[str, Any]:
    sid, name = server["server_id"], server["name"]
    # Every server's evacuation starts at once and waits here for one of its group's
    # slots, first come first served: a window that moves on as each one ends, in the
    # plan's order (the parent starts them in it), never a batch waiting for its slowest.
    async with rt().slots(group_of(failed_host, rt().groups)):
        await settle_step(sid)  # the inspector's reset and port updates on it land first
        await evacuation_record_step(
            recovery_id, sid, name, failed_host, "running", None, 0, {}, False
        )
        moved = await _move(
            sid, failed_host, server["expected_status"], dests, shared, attempts_per
        )
        await evacuation_record_step(
            recovery_id,
            sid,
            name,
            failed_host,
            moved["result"],
            moved["to"],
            moved["attempts"],
            moved["detail"],
            True,
        )
    # Out of the slot: the next evacuation need not wait for this one's ports.
    ok = moved["result"] != "failed"
    traits = {
        "instance_id": sid,
        "project_id": server["project_id"],
        "from_host": failed_host,
        "result": moved["result"],
        "recovery_id": recovery_id,
    }
    if ok:
        await ports_up_step(sid, failed_host)
        traits["to_host"] = moved["to"]
        outcome = {"to": moved["to"], "result": moved["result"]}
    else:
        traits["why"] = moved["detail"]["why"]
        outcome = {"why": moved["detail"]["why"]}
    severity = "moderate" if ok else "critical"
    await event_step("compute.instance.evacuated", traits, severity, trace_id)
    return {"server_id": sid, "ok": ok, **outcome}


async def _move(
    server_id: str,
    failed_host: str,
    expected_status: str,
    dests: list[str | None],
    shared: bool,
    attempts_per_destination: int,
) -> dict[str, Any]:
    """Evacuate, each destination in turn, until the server runs elsewhere in its
    expected state; returns the history row's result, destination, attempts, detail."""
    attempts = 0
    why = "no destination"
    for dest in dests:
        for _ in range(attempts_per_destination):
            attempts += 1
            outcome = await evacuate_step(server_id, failed_host, dest, shared)
            if outcome == "service-in-use":
                why = "Nova says the source compute service is still up"
                break
            if outcome == "conflict":
                await DBOS.sleep_async(1.0)
                continue
            arrived = await arrival_step(server_id, failed_host, expected_status)
            if arrived["ok"]:
                return {
                    "result": "already-moved" if outcome == "moved" else "recovered",
                    "to": arrived["host"],
                    "attempts": attempts,
                    "detail": {
                        "destination": dest or "scheduler",
                        # .get: a recording from before these keys still replays
                        "reads": arrived.get("reads"),
                        "woken_by_nova": arrived.get("woken_by_nova"),
                    },
                }
            why = arrived.get("why", "unknown")
    return {"result": "failed", "to": None, "attempts": attempts, "detail": {"why": why}}


@DBOS.workflow()
async def recover_host(
    incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
) -> dict[str, Any]:
    r = rt()
    rid = str(DBOS.workflow_id)
    group = group_of(host, r.groups)
    level = group.level
    common = {"host": host, "recovery_id": rid, "level": int(level), "group": group.name}

    async def record(state: str, detail: dict[str, Any], ended: bool = False) -> None:
        await record_step(rid, incident_id, host, int(level), state, detail, ended, trace_id)

    await record("STARTED", {"verdict": verdict, "group": group.name})
    await event_step("compute.host.recovery.started", common, "moderate", trace_id)
    # Safety rule 1: a host that may be alive is fenced first, whatever the level,
    # except level 1, which the operator chose knowing it.
    must_fence = level is Level.FENCE or (level is Level.NOVA_SEES_DOWN and verdict != "HOST_DOWN")
    if must_fence:
        await record("FENCING", {})
        fenced = await fence_step(host)
        if not fenced["confirmed"]:
            await force_down_step(host)  # rule 2: stays down, for an operator
            await record("FENCING_FAILED", {"fencing": fenced}, ended=True)
            await event_step(
                "compute.host.recovery.fencing_failed",
                {**common, "reason": fenced["detail"]},
                "critical",
                trace_id,
            )
            return {"state": "FENCING_FAILED", "fencing": fenced}
        await record("FENCED", {"fencing": fenced, "fenced_at": fenced["ended_at"]})
    elif level is Level.FORCE_DOWN_ONLY:
        await event_step(
            "compute.host.recovery.unfenced",
            {**common, "reason": "level 1: evacuating without fencing, as configured"},
            "critical",
            trace_id,
        )
    if level is Level.NOVA_SEES_DOWN:
        if not await wait_nova_down_step(host):
            await record("NOVA_NEVER_SAW_DOWN", {}, ended=True)
            return {"state": "NOVA_NEVER_SAW_DOWN"}
    else:
        await force_down_step(host)
    servers = [ServerFacts(**s) for s in await snapshot_step(host, before)]
    planned = plan(servers, group)
    dests = destinations(group, host)
    where = [d or "scheduler" for d in dests]
    await record("EVACUATING", {"planned": [p.server_id for p in planned], "destinations": where})
    handles = []
    for p in planned:  # all at once, in priority order; each waits for a group slot
        with SetWorkflowID(f"{rid}:{p.server_id}"):
            handles.append(
                await DBOS.start_workflow_async(
                    evacuate_server,
                    rid,
                    host,
                    {
                        "server_id": p.server_id,
                        "name": p.name,
                        "expected_status": p.expected_status,
                        "project_id": p.project_id,
                    },
                    dests,
                    group.on_shared_storage,
                    r.settings.evacuate_attempts,
                    trace_id,
                )
            )
    results: list[dict[str, Any]] = [await h.get_result() for h in handles]
    await disable_step(host, f"medevac: recovered from {verdict} (incident {incident_id})")
    failed = [x["server_id"] for x in results if not x["ok"]]
    state = "COMPLETED" if not failed else "PARTIAL"
    summary = {"evacuated": len(results) - len(failed), "failed": failed}
    await record(state, summary, ended=True)
    await event_step(
        "compute.host.recovery.completed",
        {**common, "state": state, "evacuated": summary["evacuated"], "failed": len(failed)},
        "moderate" if not failed else "critical",
        trace_id,
    )
    return {"state": state, **summary}


@DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.5)
async def server_facts_step(server_id: str) -> dict[str, Any]:
    s = await rt().cloud.get_server(server_id)
    return {"host": s.host, "status": s.status, "power": s.power_state, "metadata": s.metadata}


@DBOS.step()
async def restart_attempt_step(server_id: str) -> str:
    """Start a server Nova stopped, hard-reboot one whose domain is dead; idempotent."""
    cloud = rt().cloud
    s = await cloud.get_server(server_id)
    if s.status == "ACTIVE" and s.power_state == 1 and s.task_state is None:
        return "running"
    if s.task_state is not None:
        return "busy"  # a start or reboot is already under way
    try:
        if s.status == "SHUTOFF":
            await cloud.start_server(server_id)
            return "started"
        await cloud.reboot_server(server_id, hard=True)
    except Conflict:
        return "busy"
    return "rebooted"


@DBOS.step()
async def running_step(server_id: str) -> dict[str, Any]:
    r = rt()
    deadline = time.monotonic() + r.settings.restart_timeout
    last: dict[str, Any] = {}
    with r.task_ends.watching(server_id) as told:
        while time.monotonic() < deadline:
            s = await r.cloud.get_server(server_id)
            last = {"status": s.status, "power": s.power_state, "task_state": s.task_state}
            if s.status == "ACTIVE" and s.power_state == 1 and s.task_state is None:
                return {"ok": True, **last}
            await r.next_read(told)
    return {"ok": False, **last}


@DBOS.workflow()
async def recover_server(
    incident_id: str, host: str, server_id: str, trace_id: str
) -> dict[str, Any]:
    """SERVER_DOWN: restart the server where it is (start or hard reboot), confirm it
    runs, a bounded number of times; then say it could not."""
    r = rt()
    rid = str(DBOS.workflow_id)
    facts = await server_facts_step(server_id)
    action, _ = server_action(facts["metadata"], group_of(host, r.groups))
    traits = {"instance_id": server_id, "host": host, "recovery_id": rid}
    if action is ServerAction.NONE:
        await record_step(rid, incident_id, host, 0, "SKIPPED", {"server_id": server_id,
                          "why": "the server's policy says none"}, True, trace_id)  # fmt: skip
        return {"state": "SKIPPED"}
    await record_step(
        rid, incident_id, host, 0, "RESTARTING", {"server_id": server_id}, False, trace_id
    )
    for attempt in range(1, r.settings.restart_attempts + 1):
        outcome = await restart_attempt_step(server_id)
        running = await running_step(server_id)
        if running["ok"]:
            detail = {"server_id": server_id, "attempts": attempt, "outcome": outcome}
            await record_step(rid, incident_id, host, 0, "COMPLETED", detail, True, trace_id)
            await event_step("compute.instance.restarted", traits, "moderate", trace_id)
            return {"state": "COMPLETED", "attempts": attempt}
    detail = {"server_id": server_id, "attempts": r.settings.restart_attempts, "last": running}
    await record_step(rid, incident_id, host, 0, "FAILED", detail, True, trace_id)
    await event_step("compute.instance.recovery.failed", traits, "critical", trace_id)
    return {"state": "FAILED"}


@DBOS.step()
async def compute_restart_step(host: str) -> dict[str, Any]:
    """Ask the agent once, then wait (bounded) until its heartbeats say nova-compute runs."""
    r = rt()
    assert r.restart_compute is not None and r.compute_alive is not None
    if not r.restart_compute(host):
        return {"ok": False, "why": "the host's agent is not heard from"}
    deadline = time.monotonic() + r.settings.compute_restart_wait
    while time.monotonic() < deadline:
        if r.compute_alive(host):
            return {"ok": True}
        await asyncio.sleep(min(r.settings.poll_interval, 0.2))
    return {"ok": False, "why": f"not running {r.settings.compute_restart_wait:g} s later"}


@DBOS.workflow()
async def recover_compute(incident_id: str, host: str, trace_id: str) -> dict[str, Any]:
    """COMPUTE_PROCESS_DOWN on a live host: the inspector disabled the service; restart
    nova-compute through the host's agent, a bounded number of times, then say so.
    Never an evacuation: the host and its servers are fine."""
    r = rt()
    rid = str(DBOS.workflow_id)
    traits = {"host": host, "binary": "nova-compute", "recovery_id": rid}
    await record_step(rid, incident_id, host, 0, "RESTARTING_COMPUTE", {}, False, trace_id)
    last: dict[str, Any] = {}
    for attempt in range(1, r.settings.compute_restart_attempts + 1):
        last = await compute_restart_step(host)
        if last["ok"]:
            done: dict[str, Any] = {"attempts": attempt}
            await record_step(rid, incident_id, host, 0, "COMPLETED", done, True, trace_id)
            await event_step("compute.service.restarted", traits, "moderate", trace_id)
            return {"state": "COMPLETED", "attempts": attempt}
    detail = {"attempts": r.settings.compute_restart_attempts, "why": last.get("why")}
    await record_step(rid, incident_id, host, 0, "FAILED", detail, True, trace_id)
    await event_step("compute.service.restart_failed", traits, "critical", trace_id)
    return {"state": "FAILED"}


class Recovery:
    """Starts recoveries (idempotently) from the inspector's incidents."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = 0

    def start(
        self, incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
    ) -> str:
        """Start (or find) the recovery of this incident; returns its id at once."""
        rid = f"recover-{incident_id}"

        async def go() -> None:
            with SetWorkflowID(rid):
                await DBOS.start_workflow_async(
                    recover_host, incident_id, host, verdict, before, trace_id
                )

        self._spawn(go())
        return rid

    def order(self, host: str, servers: list[S]) -> list[S]:
        """The host's servers in the order its recovery will evacuate them."""
        group = group_of(host, rt().groups)
        return sorted(servers, key=lambda s: order_key(s.metadata, s.name, s.id, group))

    def restart(self, incident_id: str, host: str, server_id: str, trace_id: str) -> str:
        """Start (or find) the restart of a server whose domain died."""
        rid = f"restart-{incident_id}-{server_id}"

        async def go() -> None:
            with SetWorkflowID(rid):
                await DBOS.start_workflow_async(
                    recover_server, incident_id, host, server_id, trace_id
                )

        self._spawn(go())
        return rid

    def restart_compute(self, incident_id: str, host: str, trace_id: str) -> str:
        """Start (or find) the restart of a host's dead nova-compute."""
        rid = f"compute-{incident_id}"

        async def go() -> None:
            with SetWorkflowID(rid):
                await DBOS.start_workflow_async(recover_compute, incident_id, host, trace_id)

        self._spawn(go())
        return rid

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self.started += 1

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cannot start a recovery", exc_info=task.exception())


def configure_dbos(system_database_url: str) -> None:
    DBOS(
        config={
            "name": "medevac",
            "system_database_url": system_database_url,
            "application_version": APP_VERSION,
            "log_level": "WARNING",
        }
    )

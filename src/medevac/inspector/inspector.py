"""The inspector: verdicts in; the cloud's true state and the consumers' events out.

For a lost host it finds the affected servers and ports in the topology cache (a
lookup, no API call), tells the consumers at once (Doctor's shortcut: the events
do not wait for the cloud), and corrects the cloud's state in parallel: force-down,
servers to error, ports' data plane DOWN. Each action's result is an event too, so a
failed correction is never hidden behind the claim made in advance.
The mass-failure guard stands in front of every state action.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import medevac.notifier.events as ev
from medevac.checkpoints import Mark
from medevac.cloud.errors import CloudError
from medevac.cloud.models import DataPlaneStatus
from medevac.cluster.ownership import NotOwner
from medevac.inspector import announce
from medevac.inspector.actions import (
    Action,
    ActionKind,
    ResetPolicy,
    plan_host_lost,
    plan_link_down,
    plan_ports_restore,
    plan_process_down,
    plan_process_up,
)
from medevac.inspector.executor import ActionExecutor, ActionResult
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.host_states import HostStates
from medevac.inspector.incidents import (
    Incident,
    IncidentState,
    ServiceView,
    fails_again,
    released_in_cloud,
)
from medevac.inspector.lifecycle import Happening, HostState, loss_is_expected
from medevac.inspector.pending import PendingCorrections
from medevac.inspector.topology import ServerInfo, Topology
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.notifier.events import Event

log = logging.getLogger(__name__)


# A host recovery's recorded states that move its host's lifecycle.
RECOVERY_STATES = {
    "FENCING": Happening.FENCING,
    "FENCED": Happening.FENCED,
    "FENCING_FAILED": Happening.FENCING_FAILED,
    "EVACUATING": Happening.EVACUATING,
}


class EventSink(Protocol):
    def emit(
        self,
        events: Iterable[Event],
        *,
        first_alarms_first: bool = False,
        on_queued: Callable[[int], None] | None = None,
    ) -> int:
        """Evaluate and deliver events without blocking; returns deliveries queued
        now; ``on_queued`` gets the total when part of the batch was evaluated later."""
        ...

    def prepare(self, resources: Iterable[tuple[str, str]]) -> None:
        """Events about these resources (trait, value) may come: open what their
        webhooks would need now."""
        ...

    async def sent(self, within: float) -> bool:
        """Wait (bounded) until the events so far are evaluated and the alarms they
        fired were each tried once."""
        ...


class RecoveryStarter(Protocol):
    def start(
        self, incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
    ) -> str:
        """Start the host's recovery once per incident (idempotent); returns its id."""
        ...

    def restart(self, incident_id: str, host: str, server_id: str, trace_id: str) -> str:
        """Start the restart of a server whose domain died (idempotent); returns its id."""
        ...

    def order(self, host: str, servers: list[ServerInfo]) -> list[ServerInfo]:
        """The host's servers in the order its recovery will move them."""
        ...

    def retry(
        self,
        incident_id: str,
        attempt: int,
        host: str,
        verdict: str,
        before: dict[str, str],
        trace_id: str,
    ) -> str:
        """Start the ``attempt``-th retry of an incident's host recovery (idempotent);
        returns its id."""
        ...

    def restart_compute(self, incident_id: str, host: str, trace_id: str) -> str:
        """Start the restart of a host's nova-compute (idempotent); returns its id."""
        ...


class IncidentSaver(Protocol):
    def save(self, incident: Incident) -> None:
        """Persist an incident's current state (without blocking the caller)."""
        ...

    async def durable(self, incident_id: str) -> bool:
        """Wait until the incident's latest state is stored; False: the store refused it."""
        ...


class AuditSink(Protocol):
    def record(
        self, kind: str, subject: str, actor: str, detail: dict[str, Any], trace_id: str | None
    ) -> None:
        """Append an audit entry (without blocking the caller)."""
        ...


@dataclass(frozen=True)
class InspectorSettings:
    reset_servers: ResetPolicy = ResetPolicy.ERROR
    # False: observe and notify only; plans are recorded, the cloud is left alone
    # (a first deployment beside another HA system).
    act: bool = True
    # The cloud calls start once the alarms are out (or after this long): on a small
    # controller they would otherwise compete with the webhooks for the CPU.
    notify_head_start: float = 0.05
    # COMPUTE_PROCESS_DOWN: also have the host's agent restart nova-compute.
    restart_compute: bool = False


class RetryRefused(Exception):
    """A recovery cannot be retried now (the message says why)."""


def retry_number(incident_id: str, recovery_id: str) -> int | None:
    """N when ``recovery_id`` is the incident's N-th retry; None for its first recovery."""
    _, found, n = recovery_id.rpartition(f"recover-{incident_id}-retry")
    return int(n) if found and n.isdigit() else None


def retry_attempt(incident_id: str, recovery_id: str) -> int:
    """The number of the retry that follows ``recovery_id`` (the incident's first
    recovery, or its latest retry)."""
    return (retry_number(incident_id, recovery_id) or 0) + 1


class Inspector:
    """A ``VerdictSink``: ``on_verdict`` does the fast part now and schedules the rest."""

    def __init__(
        self,
        zones: dict[str, str],  # host -> zone
        topology: Topology,
        executor: ActionExecutor,
        notifier: EventSink,
        saver: IncidentSaver,
        guard: ZoneGuard,
        settings: InspectorSettings | None = None,
        *,
        recovery: RecoveryStarter | None = None,
        audit: AuditSink | None = None,
        host_states: HostStates | None = None,
        on_closed: Callable[[Incident], Any] | None = None,
        auto_release: Callable[[str], bool] = lambda host: False,
        release_retry: float = 5.0,
        release_for: float = 600.0,
        clock: Callable[[], float] = time.time,
        maintenance_left: Callable[[str], int | None] = lambda host: None,
    ) -> None:
        self.recovery = recovery
        self.audit = audit
        # Each host's lifecycle: what was decided and done about it, persisted.
        self.host_states = host_states or HostStates()
        self.auto_release = auto_release
        self.release_retry = release_retry
        self.release_for = release_for
        self.zones = zones
        self._zone_sizes = Counter(zones.values())  # not recounted on the fault path
        self.topology = topology
        self.executor = executor
        self.notifier = notifier
        self.saver = saver
        self.guard = guard
        self.settings = settings or InspectorSettings()
        self.clock = clock
        self.open: dict[str, Incident] = {}  # host -> its open incident
        self._by_trace: dict[str, Incident] = {}  # the open incidents by trace id
        self.on_closed = on_closed  # told each incident as it closes (its profile export)
        self._work: dict[str, asyncio.Task[None]] = {}  # host -> its running actions
        # Server id -> state actions planned and not yet done on it or on its ports.
        self.pending = PendingCorrections()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releases: set[asyncio.Task[Any]] = set()  # auto-release loops (long)
        # Nova's compute service of each host as last seen: incidents follow it.
        self._services: dict[str, ServiceView] = {}
        self._releasing: set[str] = set()  # hosts medevac itself is releasing now
        self.expected_losses = 0  # loss verdicts about empty hosts under maintenance
        # How many servers a host's maintenance last found on it once its migrations
        # ended (a listing of Nova's, newer than notifications still on their way);
        # None: no such count, the topology says.
        self.maintenance_left = maintenance_left

    def adopt(self, incidents: Iterable[Incident]) -> None:
        """Open incidents from the database after a restart, or of hosts taken over from
        another controller: new verdicts merge in."""
        for inc in incidents:
            if inc.is_open and inc.host not in self.open:
                self.open[inc.host] = inc
                self._by_trace[inc.trace_id] = inc

    def recover_adopted(self, inc: Incident) -> str | None:
        """An incident taken over from another controller (or read back after a
        restart), its host lost: its recovery starts here unless it already exists
        (the id comes from the incident, so a recovery the previous owner started is
        found, never started twice). The one a dying owner had not yet recorded in the
        workflow store starts now: its first recovery, or the retry it had decided on.
        Returns its id, or None when no recovery is to run."""
        held = inc.state is IncidentState.HELD
        if self.recovery is None or not self.settings.act or not inc.host_lost or held:
            return None
        if inc.recovery_ended_at is not None:
            return None
        lost = [v["kind"] for v in inc.verdicts if VerdictKind(v["kind"]).host_lost]
        verdict = lost[0] if lost else "HOST_UNREACHABLE"
        servers = self.recovery.order(inc.host, self.topology.servers_on(inc.host))
        before = {s.id: s.vm_state or "" for s in servers}
        attempt = retry_number(inc.id, inc.recovery_id) if inc.recovery_id else None
        if attempt is None:
            inc.recovery_id = self.recovery.start(inc.id, inc.host, verdict, before, inc.trace_id)
        else:
            # The retry itself, under its own id: the first recovery ended in
            # FENCING_FAILED and would run nothing. A host still FENCING_FAILED (its
            # move not stored before the controller died) is LOST again, as the retry
            # had made it.
            self._happen(inc, Happening.RETRIED, {"recovery_id": inc.recovery_id})
            inc.recovery_id = self.recovery.retry(
                inc.id, attempt, inc.host, verdict, before, inc.trace_id
            )
        self.saver.save(inc)
        return inc.recovery_id

    def drop(self, incident_id: str, host: str) -> bool:
        """Forget one incident the store would not keep (its host has another open
        incident, another controller's): True when it was the host's open one here."""
        inc = self.open.get(host)
        if inc is None or inc.id != incident_id:
            return False
        return self.forget({host}) == 1

    def forget(self, hosts: set[str]) -> int:
        """Another controller owns ``hosts`` now: their open incidents leave memory (the
        store keeps them; the new owner adopts them). Returns how many left."""
        gone = [self.open.pop(h) for h in hosts if h in self.open]
        for inc in gone:
            self._by_trace.pop(inc.trace_id, None)
            self._services.pop(inc.host, None)
        return len(gone)

    def resume(self) -> int:
        """After a restart, once the topology is loaded: corrections a dead predecessor
        left unfinished run again (their plans skip what is already done)."""
        resumed = 0
        for inc in list(self.open.values()):
            if inc.state is not IncidentState.CORRECTING:
                continue
            plan: list[Action] = []
            if inc.host_lost:
                servers = self.topology.servers_on(inc.host)
                ports = self.topology.ports_on(inc.host)
                plan = plan_host_lost(inc.host, servers, ports, self.settings.reset_servers)
            else:
                for key in inc.faults:
                    kind, _, physnet = key.partition(":")
                    if kind == "link":
                        ports = self.topology.ports_on(inc.host, physnet)
                        plan += plan_link_down(inc.host, physnet, ports)
            self._run(inc, plan)
            resumed += 1
        self.pending.resumed.set()
        return resumed

    # -- VerdictSink --------------------------------------------------------------

    def prepare(self, host: str) -> None:
        """The monitor suspects ``host``: the consumers its verdict would alert get
        their connections opened during the confirmation, not on the first alarm."""
        resources = [("host", host)]
        resources += [("instance_id", s.id) for s in self.topology.servers_on(host)]
        resources += [("port_id", p.id) for p in self.topology.ports_on(host)]
        self.notifier.prepare(resources)

    def on_verdict(self, verdict: Verdict) -> None:
        try:
            self._handle(verdict)
        except Exception:  # a bug here must never take the monitor down with it
            log.exception("inspector failed on verdict %s %s", verdict.kind, verdict.host)

    def _handle(self, verdict: Verdict) -> None:
        if verdict.kind is VerdictKind.OBSERVER_ISOLATED:
            self._isolated(verdict)
            return
        if verdict.kind.host_lost and self._loss_expected(verdict):
            return
        inc = self.open.get(verdict.host)
        if inc is not None and fails_again(inc, verdict):
            inc = self._supersede(inc, verdict)
        elif inc is None:
            if verdict.kind in (
                VerdictKind.HOST_UP,
                VerdictKind.LINK_UP,
                VerdictKind.COMPUTE_PROCESS_UP,
            ):
                return  # nothing of ours to heal
            inc = self._open_incident(verdict)
        opened, healed = inc.add_verdict(verdict)
        kind = verdict.kind
        if kind.host_lost and opened:
            self._host_lost(inc, verdict)
        elif kind is VerdictKind.LINK_DOWN and opened and not inc.host_lost:
            self._link_down(inc, verdict)
        elif kind is VerdictKind.LINK_UP:
            self._restore_ports(inc, physnet=verdict.subject)
        elif kind is VerdictKind.HOST_UP:
            self._host_up(inc)
        elif kind is VerdictKind.SERVER_DOWN and opened:
            self._server_down(inc, verdict)
        elif kind is VerdictKind.COMPUTE_PROCESS_DOWN and opened and not inc.host_lost:
            self._process(inc, down=True)
        elif kind is VerdictKind.COMPUTE_PROCESS_UP and not inc.host_lost:
            self._process(inc, down=False)
        if healed and not self._awaiting_release(inc.host) and inc.is_open:
            self._close_when_idle(inc, "healed")
        self.saver.save(inc)

    def _loss_expected(self, verdict: Verdict) -> bool:
        """An empty host under maintenance went silent or off: the planned work, not a
        failure. No incident, no action, no event; the audit log says so."""
        host = verdict.host
        left = self.maintenance_left(host)
        servers = left if left is not None else len(self.topology.servers_on(host))
        if not loss_is_expected(self.host_states.life(host).state, servers):
            return False
        self.expected_losses += 1
        log.info("%s is under maintenance and empty: %s is no failure", host, verdict.kind)
        if self.audit is not None:
            detail = {"verdict": verdict.kind.value, "servers_on_host": servers}
            trace = verdict.trace_id
            self.audit.record("maintenance.host.silent", host, "inspector", detail, trace)
        return True

    def maintenance(
        self, host: str, *, started: bool, detail: dict[str, Any], trace_id: str | None = None
    ) -> HostState | None:
        """A planned maintenance of ``host`` started (or ended): its lifecycle moves to
        MAINTENANCE (back to UP); None when that does not apply in its state now."""
        happening = Happening.MAINTENANCE if started else Happening.MAINTENANCE_ENDED
        zone = self.zones.get(host, "nova")
        return self.host_states.happen(host, zone, happening, trace_id, detail)

    def _open_incident(self, verdict: Verdict) -> Incident:
        received = verdict.evidence.get("raw_received_at") or verdict.at
        inc = Incident(
            verdict.host, self.zones.get(verdict.host, "nova"), verdict.at, verdict.trace_id
        )
        inc.stamp(Mark.T01, float(received))
        inc.stamp(Mark.V, verdict.at)
        estimate = verdict.evidence.get("fault_estimated_at")
        if estimate is not None:
            inc.stamp(Mark.T00_ESTIMATE, float(estimate))
        self.open[verdict.host] = inc
        self._by_trace[inc.trace_id] = inc
        return inc

    def _supersede(self, old: Incident, verdict: Verdict) -> Incident:
        """The host failed again after its recovery ended: the old incident closes and
        a new one, with a recovery of its own, takes over the ports the old one left
        DOWN (they go back when this host is released)."""
        new = self._open_incident(verdict)
        new.ports_down.update(old.ports_down)
        old.ports_down.clear()
        why = f"superseded by incident {new.id}: the host failed again after its recovery"
        self._close_when_idle(old, why)
        self.saver.save(old)  # first: one open incident per host, in the store too
        log.warning("%s failed again after its recovery ended: new incident %s", old.host, new.id)
        self._audit("incident.superseded", old, {"incident_id": old.id, "by": new.id})
        return new

    # -- host lost ----------------------------------------------------------------

    def _host_lost(self, inc: Incident, verdict: Verdict) -> None:
        self._happen(inc, Happening.LOST, {"verdict": verdict.kind.value})
        now = self.clock()
        zone_size = self._zone_sizes[inc.zone] or 1
        lost = {
            i.host: i.faults["host:"]
            for i in self.open.values()
            if i.zone == inc.zone and i.host_lost
        }
        decision = self.guard.admit(inc.zone, lost, zone_size, now)
        if not decision.allowed:
            self._hold(inc, decision.reason, first=decision.newly_held)
            return
        servers = self.topology.servers_on(inc.host)
        if self.recovery is not None and self.settings.act:
            # Corrected in the order they will be evacuated: each evacuation waits for
            # its own server's actions only, so the first to move settle first.
            servers = self.recovery.order(inc.host, servers)
        ports = self.topology.ports_on(inc.host)
        inc.stamp(Mark.T02, self.clock())
        # The servers' events first: they are what the consumers' alarms wait on. Built
        # as they are evaluated, so the first webhooks wait for only a few of them.
        self._emit(
            inc,
            announce.server_events(inc, servers, self.clock(), reset_to_error=self._resets),
            Mark.T06,
            first_alarms_first=True,
            described=(len(servers), [ev.INSTANCE_UPDATE]),
        )
        plan = plan_host_lost(inc.host, servers, ports, self.settings.reset_servers)
        host_and_ports = [announce.host_event(ev.HOST_DOWN, inc, verdict, self.clock())]
        self._emit(
            inc,
            host_and_ports + announce.port_events(inc, ports, DataPlaneStatus.DOWN, self.clock()),
            Mark.T06,
        )
        for p in ports:
            if p.data_plane_status is not DataPlaneStatus.DOWN:
                inc.ports_down.setdefault(p.id, p.data_plane_status)
        inc.move(IncidentState.CORRECTING, now)
        self._run(inc, plan)
        if self.recovery is not None and self.settings.act and inc.recovery_id is None:
            # The recovery fences and evacuates; it starts now, beside the correction.
            before = {s.id: s.vm_state or "" for s in servers}
            inc.recovery_id = self.recovery.start(
                inc.id, inc.host, verdict.kind.value, before, inc.trace_id
            )

    def _hold(self, inc: Incident, reason: str, *, first: bool) -> None:
        self._happen(inc, Happening.HELD, {"reason": reason})
        inc.held_reason = reason
        inc.move(IncidentState.HELD, self.clock())
        log.critical("no action on %s: %s", inc.host, reason)
        if first:  # the zone's first hold is announced; the others join it
            self._emit(
                inc, [announce.guard_event(inc.zone, reason, inc.trace_id, self.clock())], None
            )

    def _isolated(self, verdict: Verdict) -> None:
        zone = verdict.host
        silent = verdict.evidence.get("silent_hosts", [])
        reason = (
            f"the controller lost {len(silent)} hosts of zone {zone!r} at once: "
            "it is probably cut off itself"
        )
        if self.guard.isolate(zone, self.clock(), reason):
            log.critical("zone %s held: %s", zone, reason)
            self.notifier.emit([announce.guard_event(zone, reason, verdict.trace_id, self.clock())])

    # -- links, servers -----------------------------------------------------------

    def _link_down(self, inc: Incident, verdict: Verdict) -> None:
        physnet = verdict.subject or ""
        ports = self.topology.ports_on(inc.host, physnet)
        inc.stamp(Mark.T02, self.clock())
        plan = plan_link_down(inc.host, physnet, ports)
        self._emit(
            inc, announce.port_events(inc, ports, DataPlaneStatus.DOWN, self.clock()), Mark.T06
        )
        for p in ports:
            if p.data_plane_status is not DataPlaneStatus.DOWN:
                inc.ports_down.setdefault(p.id, p.data_plane_status)
        if inc.state is IncidentState.OPEN:
            inc.move(IncidentState.CORRECTING, self.clock())
        self._run(inc, plan)

    def _server_down(self, inc: Incident, verdict: Verdict) -> None:
        server_id = verdict.subject or ""
        event = announce.server_down_event(
            inc, server_id, self.topology.server(server_id), self.clock()
        )
        self._emit(inc, [event], Mark.T06)
        if self.recovery is not None and self.settings.act and verdict.subject:
            self.recovery.restart(inc.id, inc.host, verdict.subject, inc.trace_id)

    def _process(self, inc: Incident, *, down: bool) -> None:
        """nova-compute died (or came back) on a host that is otherwise fine: disable
        (enable) its service and say so; never an evacuation for this alone."""
        event_type = "compute.service.down" if down else "compute.service.up"
        traits = {"host": inc.host, "binary": "nova-compute", "incident_id": inc.id}
        event = Event(event_type, self.clock(), traits, trace_id=inc.trace_id)
        self._emit(inc, [event], Mark.T06 if down else None)
        if down and inc.state is IncidentState.OPEN:
            inc.move(IncidentState.CORRECTING, self.clock())
        self._run(inc, plan_process_down(inc.host) if down else plan_process_up(inc.host))
        restart = down and self.settings.act and self.settings.restart_compute
        if restart and self.recovery is not None:
            self.recovery.restart_compute(inc.id, inc.host, inc.trace_id)

    # -- recovery verdicts --------------------------------------------------------

    def _host_up(self, inc: Incident) -> None:
        if inc.recovery_id is not None:
            # Fenced and evacuated: it stays forced down and disabled until its
            # nova-compute has cleaned up and an operator or policy releases it.
            self._happen(inc, Happening.BACK)
            if self._follow_cloud(inc):
                return
            if self.auto_release(inc.host):
                task = asyncio.ensure_future(self._auto_release(inc.host))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)
            return
        self._happen(inc, Happening.HEALED)
        self._emit(inc, [announce.host_event(ev.HOST_UP, inc, None, self.clock())], None)
        self._restore_ports(inc, physnet=None)

    async def release(self, host: str, actor: str) -> dict[str, Any]:
        """Put a returned host back in service: force-down unset, service enabled,
        ports restored, ``compute.host.up`` sent. Raises CloudError when Nova refuses
        (it does while evacuations away from the host are not cleaned up), NotOwner
        when another controller owns the host."""
        cloud = self.executor.cloud
        ownership = self.executor.ownership
        if not await ownership.authorize(host, "release", {"by": actor}, None):
            raise NotOwner(ownership.member_id, host)
        self._releasing.add(host)  # our own calls are no release by the cloud
        try:
            await cloud.set_forced_down(host, False)
            await cloud.set_enabled(host, True)
            zone = self.zones.get(host, "nova")
            inc = self.open.get(host)
            if inc is not None:
                self._happen(inc, Happening.RELEASED, {"by": actor})
            else:
                self.host_states.happen(host, zone, Happening.RELEASED, None, {"by": actor})
            restored = await self._back_in_service(host, actor)
        finally:
            self._releasing.discard(host)
        return {"host": host, "released_by": actor, "ports_restored": restored}

    async def retry_recovery(
        self, host: str, actor: str, recovery_id: str | None = None
    ) -> dict[str, Any]:
        """Start the host's recovery again after its fencing failed (an operator saw to
        the BMC): fencing is tried first again, and nothing moves unless it is
        confirmed. ``recovery_id``: the one the operator saw, which must be the host's
        latest. Raises RetryRefused when the host is not in FENCING_FAILED (or no
        recovery can run), NotOwner when another controller owns the host."""
        inc = self.open.get(host)
        state = self.host_states.life(host).state
        if state is not HostState.FENCING_FAILED:
            raise RetryRefused(f"{host} is {state.value}, not FENCING_FAILED")
        if inc is None or inc.recovery_id is None or inc.recovery_ended_at is None:
            raise RetryRefused(f"{host} has no ended recovery to retry")
        if recovery_id is not None and inc.recovery_id != recovery_id:
            raise RetryRefused(f"{recovery_id} is not {host}'s latest recovery")
        if self.recovery is None or not self.settings.act:
            raise RetryRefused("recovery is not enabled on this controller")
        ownership = self.executor.ownership
        if not await ownership.authorize(host, "recovery.retry", {"by": actor}, None):
            raise NotOwner(ownership.member_id, host)
        state = self.host_states.life(host).state
        if state is not HostState.FENCING_FAILED or inc.recovery_ended_at is None:
            raise RetryRefused(f"{host} moved on meanwhile")  # another retry won
        previous = inc.recovery_id
        attempt = retry_attempt(inc.id, previous)
        lost = [v["kind"] for v in inc.verdicts if VerdictKind(v["kind"]).host_lost]
        servers = self.recovery.order(host, self.topology.servers_on(host))
        before = {s.id: s.vm_state or "" for s in servers}
        # The retry is stored with its incident before its host leaves FENCING_FAILED
        # and before it starts: a controller dying in between leaves the retry to the
        # host's next owner (or to itself restarted), which starts it under this id.
        inc.recovery_ended_at = None
        inc.recovery_id = f"recover-{inc.id}-retry{attempt}"
        self.saver.save(inc)
        if not await self.saver.durable(inc.id) or self.open.get(host) is not inc:
            raise RetryRefused(f"{host}'s incident moved on meanwhile")
        self._happen(inc, Happening.RETRIED, {"by": actor, "previous": previous})
        inc.recovery_id = self.recovery.retry(
            inc.id, attempt, host, lost[0] if lost else "HOST_UNREACHABLE", before, inc.trace_id
        )
        return {
            "host": host,
            "incident_id": inc.id,
            "previous_recovery_id": previous,
            "recovery_id": inc.recovery_id,
            "retried_by": actor,
        }

    # -- following the cloud ------------------------------------------------------

    def on_service_view(self, host: str, view: ServiceView) -> None:
        """Nova's compute service of ``host`` as just seen (polled or notified): an
        incident awaiting release closes once Nova shows its host put back. Only a host
        with an open incident keeps its view: a release is judged on views taken after
        its recovery ended, so none from before the incident is ever needed."""
        inc = self.open.get(host)
        if inc is None:
            return
        last = self._services.get(host)
        if last is not None and last.as_of > view.as_of:
            return  # an older view arriving late
        self._services[host] = view
        self._follow_cloud(inc)

    def recovery_progress(
        self, incident_id: str, recovery_id: str, state: str, at: float, ended: bool
    ) -> None:
        """A host recovery recorded a state: its host's lifecycle follows it; once it has
        ended (any outcome) its incident follows the cloud, and a new loss of its host
        is a new incident."""
        inc = next((i for i in self.open.values() if i.id == incident_id), None)
        if inc is None or inc.recovery_id != recovery_id:
            return
        happening = RECOVERY_STATES.get(state)
        if happening is not None:
            self._happen(inc, happening, {"recovery_id": recovery_id})
        if not ended or inc.recovery_ended_at is not None:
            return
        self._happen(inc, Happening.RECOVERY_ENDED, {"recovery_id": recovery_id, "state": state})
        inc.recovery_ended_at = at
        self.saver.save(inc)
        self._follow_cloud(inc)

    def _follow_cloud(self, inc: Incident) -> bool:
        """Close ``inc`` as released when the cloud shows its host back in service."""
        view = self._services.get(inc.host)
        state = self.host_states.life(inc.host).state
        seen = None if inc.host in self._releasing else released_in_cloud(inc, state, view)
        if seen is None or view is None:
            return False
        actor = f"the cloud ({seen})"
        log.warning("%s was put back in service outside medevac: %s", inc.host, seen)
        self._audit(
            "host.released_in_cloud",
            inc,
            {"incident_id": inc.id, "seen": seen, "as_of": view.as_of},
        )
        self._happen(inc, Happening.RELEASED, {"by": actor})
        self._close_when_idle(inc, f"released by {actor}")
        self.saver.save(inc)
        self._releasing.add(inc.host)

        async def put_back() -> None:
            try:
                await self.pending.resumed.wait()  # the ports' topology is loaded
                await self._back_in_service(inc.host, actor, inc)
            finally:
                self._releasing.discard(inc.host)

        self._spawn_for(inc, put_back())
        return True

    async def _back_in_service(self, host: str, actor: str, inc: Incident | None = None) -> int:
        """Nova has the host back: the ports its incident set DOWN are restored,
        ``compute.host.up`` is sent, the incident closes; returns the ports restored."""
        inc = inc or self.open.get(host)
        before: dict[str, str | None] = dict(inc.ports_down) if inc is not None else {}
        for on_host in self.topology.ports_on(host):
            if on_host.data_plane_status is DataPlaneStatus.DOWN:
                before.setdefault(on_host.id, None)
        ports = [p for pid in before if (p := self.topology.port(pid)) is not None]
        plan = plan_ports_restore(host, ports, before)
        target = inc if inc is not None else Incident(host, self.zones.get(host, "nova"), 0, "")
        results = await self.executor.run(
            plan, lambda r: self._on_result(target, r), host=host, trace_id=target.trace_id
        )
        event = announce.host_event(ev.HOST_UP, target, None, self.clock())
        event.traits["released_by"] = actor
        self.notifier.emit([event])
        if inc is not None:
            for r in results:
                if r.ok:
                    inc.ports_down.pop(r.action.target, None)
            if not inc.faults and inc.is_open:
                self._close_when_idle(inc, f"released by {actor}")
            self.saver.save(inc)
        return sum(r.ok for r in results)

    async def _auto_release(self, host: str) -> None:
        deadline = self.clock() + self.release_for
        while self.clock() < deadline:
            inc = self.open.get(host)
            if inc is None or not self._awaiting_release(host):
                return
            try:
                await self.release(host, "policy (auto_release)")
                return
            except Exception as exc:  # Nova refuses until the host has cleaned up
                log.info("auto release of %s not yet possible: %s", host, exc)
            await asyncio.sleep(self.release_retry)

    def _restore_ports(self, inc: Incident, physnet: str | None) -> None:
        before = {
            pid: status
            for pid, status in inc.ports_down.items()
            if physnet is None or self._physnet(pid) == physnet
        }
        if not before:
            return
        pending = self._work.get(inc.host)

        async def restore() -> None:
            if pending is not None:  # never race the correction still setting them DOWN
                await asyncio.gather(pending, return_exceptions=True)
            await self._put_ports_back(inc, before)

        self._spawn_for(inc, restore())

    async def restore_server_ports(self, host: str, server_id: str) -> int | None:
        """A server of a lost host runs elsewhere now: the ports this incident set DOWN
        on it go back to what they were. Returns how many, or None when this cannot tell
        (no open incident of the host, or a port it set DOWN missing from the topology,
        as while a restarted controller loads it): the caller then asks Neutron. The
        recovery calls it once the server's own corrections have landed (``settled``),
        so nothing races them. CloudError when a port could not be put back (an event
        says so too)."""
        inc = self.open.get(host)
        if inc is None:
            return None
        ports = [(pid, status, self.topology.port(pid)) for pid, status in inc.ports_down.items()]
        if any(port is None for _, _, port in ports):
            return None
        before = {
            pid: status for pid, status, port in ports if port and port.device_id == server_id
        }
        failed = await self._put_ports_back(inc, before)
        if failed:
            raise CloudError(f"ports of {server_id} not put back: {', '.join(failed)}")
        return len(before)

    async def _put_ports_back(self, inc: Incident, before: dict[str, str | None]) -> list[str]:
        """Set the ports back to their status before this incident; returns the ports that
        failed (each also an event), and forgets the others."""
        if not before:
            return []
        ports = [p for pid in before if (p := self.topology.port(pid)) is not None]
        plan = plan_ports_restore(inc.host, ports, before)
        results = await self.executor.run(
            plan, lambda r: self._on_result(inc, r), host=inc.host, trace_id=inc.trace_id
        )
        for r in results:
            if r.ok:
                inc.ports_down.pop(r.action.target, None)
        self.saver.save(inc)
        return [r.action.target for r in results if not r.ok]

    def _physnet(self, port_id: str) -> str | None:
        port = self.topology.port(port_id)
        return port.physnet if port else None

    # -- running actions ----------------------------------------------------------

    def _run(self, inc: Incident, plan: list[Action]) -> None:
        if not self.settings.act:
            inc.actions.extend(
                {"kind": a.kind.value, "target": a.target, "value": a.value, "skipped": "observe"}
                for a in plan
            )
            if inc.state is IncidentState.CORRECTING:
                inc.move(IncidentState.OPEN, self.clock())
            return
        # Marked pending now, not when the actions start: a correction may queue behind
        # the host's previous one, and a recovery asking meanwhile must wait for it.
        left = {a.key: self._subject(a) for a in plan}
        self.pending.add(left.values())

        def on_result(r: ActionResult) -> None:
            self.pending.done(left.pop(r.action.key, None))
            self._on_result(inc, r)

        async def correct() -> None:
            await self.notifier.sent(self.settings.notify_head_start)
            results = await self.executor.run(plan, on_result, host=inc.host, trace_id=inc.trace_id)
            if inc.state is IncidentState.CORRECTING:
                ok = all(r.ok for r in results)
                inc.move(IncidentState.CORRECTED if ok else IncidentState.PARTIAL, self.clock())
            self.saver.save(inc)

        def unpend_the_rest(_: asyncio.Task[None]) -> None:
            # Cancelled or failed before every result came: nobody waits forever.
            for subject in left.values():
                self.pending.done(subject)
            left.clear()

        self._spawn_for(inc, correct()).add_done_callback(unpend_the_rest)

    @property
    def _resets(self) -> bool:
        """The servers of a lost host are reset to error (so their events say error)."""
        return self.settings.act and self.settings.reset_servers is ResetPolicy.ERROR

    def _subject(self, action: Action) -> str:
        """The server an action is about: a port's is the server it belongs to."""
        if action.kind is ActionKind.PORT_STATUS:
            port = self.topology.port(action.target)
            if port is not None and port.device_id:
                return port.device_id
        return action.target

    def _spawn_for(self, inc: Incident, coro: Any) -> asyncio.Task[None]:
        previous = self._work.get(inc.host)

        async def chained() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await coro

        task = asyncio.ensure_future(chained())
        self._work[inc.host] = task
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._work.get(inc.host) is t:
                del self._work[inc.host]
            if not t.cancelled() and t.exception() is not None:
                log.error("actions for %s failed", inc.host, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def _on_result(self, inc: Incident, r: ActionResult) -> None:
        a = r.action
        inc.actions.append(r.as_dict())
        if r.ok:
            # The topology keeps what the cloud listed or notified, never what we set:
            # someone may undo our change before the next listing, and a plan skipping
            # a server on stale knowledge would leave a false state behind.
            if a.kind is ActionKind.FORCE_DOWN:
                inc.stamp(Mark.T03, r.ended)
            elif a.kind is ActionKind.RESET_STATE:
                inc.stamps[Mark.T04] = max(inc.stamps.get(Mark.T04, 0.0), r.ended)
            elif a.kind is ActionKind.PORT_STATUS and a.value == DataPlaneStatus.DOWN:
                inc.stamps[Mark.T05] = max(inc.stamps.get(Mark.T05, 0.0), r.ended)
            return
        log.error("%s %s on %s failed: %s", a.kind, a.target, inc.host, r.error)
        self._emit(inc, [announce.action_failed_event(inc, r, self.clock())], None)

    def _close_when_idle(self, inc: Incident, why: str) -> None:
        inc.move(IncidentState.CLOSED, self.clock())
        inc.closed_by = why
        if self.open.get(inc.host) is inc:
            del self.open[inc.host]
        self._by_trace.pop(inc.trace_id, None)
        if self.on_closed is not None:
            self.on_closed(inc)

    def _happen(
        self, inc: Incident, happening: Happening, detail: dict[str, Any] | None = None
    ) -> None:
        self.host_states.happen(inc.host, inc.zone, happening, inc.trace_id, detail)
        inc.awaiting_release = self._awaiting_release(inc.host)

    def _awaiting_release(self, host: str) -> bool:
        return self.host_states.life(host).state is HostState.AWAITING_RELEASE

    def _audit(self, kind: str, inc: Incident, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.record(kind, inc.host, "inspector", detail, inc.trace_id)

    def checkpoint(self, trace_id: str | None, name: str, at: float) -> None:
        """The notifier's marks (T07 evaluated, T08 fired, T09 received) on the incident
        its events came from; only the first of each counts."""
        inc = self._by_trace.get(trace_id or "")
        if inc is not None and name not in inc.stamps:
            inc.stamps[name] = at
            self.saver.save(inc)

    # -- events -------------------------------------------------------------------

    def _emit(
        self,
        inc: Incident,
        events: Sequence[Event] | Iterator[Event],
        checkpoint: str | None,
        *,
        first_alarms_first: bool = False,
        described: tuple[int, list[str]] | None = None,
    ) -> None:
        """Hand events to the notifier and record them on the incident; ``described``
        (how many, of which types) when ``events`` is an iterator built lazily."""
        if described is None:
            assert isinstance(events, Sequence)
            described = (len(events), sorted({e.event_type for e in events}))
        count, types = described
        if not count:
            return
        now = self.clock()
        if checkpoint:
            inc.stamp(checkpoint, now)
        record = {"at": now, "types": types, "count": count, "deliveries": 0}
        inc.events.append(record)

        def queued(n: int) -> None:  # part of the batch was evaluated a few ms later
            record["deliveries"] = n
            self.saver.save(inc)

        record["deliveries"] = self.notifier.emit(
            events, first_alarms_first=first_alarms_first, on_queued=queued
        )

    async def settled(self, server_id: str) -> None:
        """Wait until no state action is pending on this server or its ports (recovery
        waits: a reset landing on a server Nova is rebuilding would break the rebuild,
        and a port set DOWN after the evacuation set it back would stay DOWN)."""
        await self.pending.settled(server_id)

    async def drain(self) -> None:
        """Wait for the actions in flight (tests, shutdown); stop auto-release loops."""
        for task in list(self._releases):
            task.cancel()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

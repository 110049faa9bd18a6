"""One controller process: builds its parts, runs them, stops them cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import uvicorn
from dbos import DBOS
from starlette.applications import Starlette

from medevac.bmc.power import BmcPowerReader
from medevac.changes import HOSTS, RECOVERIES, ChangeFeed
from medevac.cloud.nova_events import NovaEvent, NovaNotificationListener
from medevac.cloud.nova_view import CloudNovaView
from medevac.cluster.membership import ClusterView, Membership
from medevac.cluster.ownership import Ownership, SharedOwnership, SoleController
from medevac.cluster.quorum import PeerQuorum
from medevac.cluster.ring import owner_of
from medevac.config import (
    Settings,
)
from medevac.inspector.host_states import HostStates
from medevac.inspector.incidents import Incident, ServiceView
from medevac.inspector.inspector import Inspector
from medevac.inspector.journal import IncidentJournal
from medevac.inspector.sync import TopologySync
from medevac.inspector.topology import ServerInfo
from medevac.monitor.hosts import HostMonitor
from medevac.monitor.udp import DrainingDatagramTransport, open_draining_endpoint
from medevac.notifier.events import CONTROLLER_ISOLATED, Event
from medevac.notifier.notifier import Notifier
from medevac.profiler.profile import incident_profile
from medevac.profiler.tracing import SpanExport
from medevac.recovery.fence import BmcFencer
from medevac.recovery.groups import stored_groups
from medevac.recovery.maintenance import Maintenance
from medevac.recovery.maintenance_flow import (
    MaintenanceRuntime,
    MaintenanceSteps,
    MaintenanceWorkflows,
    workflow_id,
)
from medevac.recovery.runtime import RecoveryRuntime, RecoverySettings
from medevac.recovery.starter import Recovery
from medevac.recovery.steps import RecoverySteps
from medevac.recovery.task_ends import TaskEnds
from medevac.recovery.workflows import RecoveryWorkflows, configure_dbos
from medevac.service.audit import AuditLog, VerdictAudit, VerdictFanout
from medevac.service.build import (
    bmc_thread_pool,
    build_bmc_clients,
    build_cloud_driver,
    build_inspector,
    build_notifier,
    host_group,
    monitor_settings,
    retention_policy,
)
from medevac.service.metrics import BlocksCollector, ControllerMetrics, scraper_app
from medevac.serving import base_url, server_config
from medevac.storage import Database
from medevac.storage.maintenances import MaintenanceStore
from medevac.storage.records import (
    HostStore,
    IncidentStore,
    RecoveryStore,
)
from medevac.storage.retention import run_retention

log = logging.getLogger(__name__)
GRACEFUL_STOP = 5.0  # s: the API's in-flight requests at a stop
TAKEOVER_RETRY = 0.5  # s: the first wait before a takeover the store refused is tried again


class AppFactory(Protocol):
    def __call__(
        self,
        settings: Settings,
        db: Database,
        monitor: HostMonitor | None = None,
        inspector: Inspector | None = None,
        notifier: Notifier | None = None,
        cluster: Callable[[], dict[str, Any]] | None = None,
        metrics: ControllerMetrics | None = None,
        changes: ChangeFeed | None = None,
        maintenance: Maintenance | None = None,
    ) -> Starlette:
        """The controller's API over its blocks (the surface passes its own)."""
        ...


class _Listener(uvicorn.Server):
    """A second server on the loop: the API's server handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Controller:
    """One controller process: storage, API, monitor, and (as they land) the other blocks.
    ``make_app`` builds its API: the surfaces pass it, so the wiring imports none."""

    def __init__(self, settings: Settings, make_app: AppFactory) -> None:
        self.settings = settings
        self.make_app = make_app
        self._loop: asyncio.AbstractEventLoop | None = None  # set once running
        self._server: uvicorn.Server | None = None
        self.db = Database(settings.storage.url)
        # What changes, for the live views (the dashboard's stream); free while unheard.
        self.changes = ChangeFeed()
        self.cloud = build_cloud_driver(settings.cloud)
        self.power: BmcPowerReader | None = None
        self.monitor: HostMonitor | None = None
        self.listener: NovaNotificationListener | None = None
        # A recovery's waits on servers wake when Nova says their task ended.
        self.task_ends = TaskEnds(lambda: self.listener is not None and self.listener.connected)
        # The notifier's marks go to the incident their events came from: the inspector,
        # built below, is looked up when a mark comes.
        self.membership: Membership | None = None
        # Its own registry: several controllers (tests) may share a process.
        self.metrics = ControllerMetrics()
        self.notifier = build_notifier(
            settings,
            self.db,
            self._checkpoint,
            may_send=lambda: self.membership is None or self.membership.lease_valid(),
        )
        p = settings.profiler
        self.spans = SpanExport.from_settings(p.otel_exporter, p.otel_endpoint, p.otel_service_name)
        self._exports: set[asyncio.Task[None]] = set()
        self.journal = IncidentJournal(
            IncidentStore(self.db), on_conflict=self._incident_conflict, changes=self.changes
        )
        self.audit = AuditLog(self.db, self.changes)
        self.notifier.changes = self.changes
        self.bmc_threads = bmc_thread_pool(len(settings.hosts))
        bmcs = build_bmc_clients(settings, self.bmc_threads)
        self._build_cluster(settings)
        r = settings.recovery
        self.recovery: Recovery | None = None
        self.maintenance: Maintenance | None = None
        self.maintenances = MaintenanceStore(self.db)
        # Servers each host's maintenance left on it once its migrations ended.
        self._maintenance_left: dict[str, int] = {}
        if r.enabled:
            # The recovery waits on the inspector, which starts it: the waits are looked
            # up when a step runs, once both exist.
            runtime = RecoveryRuntime(
                cloud=self.cloud,
                fencer=self.metrics.counted(
                    BmcFencer(
                        bmcs,
                        check_interval=r.check_interval,
                        check_max_count=r.check_max_count,
                    )
                ),
                store=RecoveryStore(self.db),
                # Masakari segments in the store over the configured groups.
                groups=stored_groups([host_group(g) for g in r.groups], self.db),
                settings=RecoverySettings(
                    evacuate_timeout=r.evacuate_timeout,
                    evacuate_attempts=r.evacuate_attempts,
                    compute_restart_attempts=r.compute_restart_attempts,
                    compute_restart_wait=r.compute_restart_wait,
                ),
                emit=self.notifier.emit,
                audit=lambda kind, subject, detail, trace: self.db.record_audit(
                    kind, subject, "recovery", detail, trace
                ),
                settled=lambda server_id: self.inspector.settled(server_id),
                restore_ports=lambda host, sid: self.inspector.restore_server_ports(host, sid),
                task_ends=self.task_ends,
                progress=self._recovery_progress,
                evacuation_progress=lambda rid, server, result: self.changes.publish(
                    RECOVERIES, rid, server=server, result=result
                ),
                restart_compute=self._restart_compute if r.restart_compute else None,
                compute_alive=self._compute_alive if r.restart_compute else None,
                ownership=self.ownership,
            )
            steps = RecoverySteps(runtime)
            member = self.shared.member_id if self.shared is not None else None
            self.recovery = Recovery(RecoveryWorkflows(steps), member, self.journal.durable)
            self.maintenance = self._build_maintenance(runtime)
            configure_dbos(r.workflows_url(settings.storage.url), member)
        self.host_states = HostStates(HostStore(self.db), changes=self.changes)
        self.inspector = build_inspector(
            settings,
            self.cloud,
            self.notifier,
            self.journal,
            self.audit,
            self.host_states,
            self.recovery,
            on_closed=lambda inc: self.fault_over(inc.id, inc.as_dict()),
            ownership=self.ownership,
            maintenance_left=self._maintenance_left.get,
        )
        self.sync = TopologySync(
            self.cloud, self.inspector.topology, settings.inspector.resync_interval
        )
        if settings.hosts:
            self.power = BmcPowerReader(bmcs)
            self.monitor = HostMonitor(
                {name: h.zone for name, h in settings.hosts.items()},
                settings.agent_key(),
                VerdictFanout(self.inspector, VerdictAudit(self.audit), self.metrics.faults),
                self.power,
                CloudNovaView(self.cloud),
                monitor_settings(settings.monitor),
                on_suspect=self.inspector.prepare,
                on_nova_view=self._nova_view,
                accept_master_key=settings.monitor.accept_master_key,
                owns=self.ownership.holds,
                quorum=self.quorum,
                on_state=lambda host, state: self.changes.publish(HOSTS, host, monitor=state),
            )
        self.metrics.watch(
            BlocksCollector(
                monitor=self.monitor,
                inspector=self.inspector,
                notifier=self.notifier,
                cloud=self.cloud,
                cluster=self.shared.status if self.shared is not None else None,
            )
        )

    def _build_maintenance(self, runtime: RecoveryRuntime) -> Maintenance:
        """Planned maintenance over the recovery's runtime (epochs, events, audit, Nova's
        task notifications, the groups and their slots). The hosts' lifecycles and the
        topology are the inspector's, looked up when used (it is built after)."""
        r = self.settings.recovery
        steps = MaintenanceSteps(
            MaintenanceRuntime(
                rt=runtime,
                cloud=self.cloud,
                store=self.maintenances,
                host_state=self._host_state,
                seen=lambda server: self.inspector.topology.put_server(ServerInfo.of(server)),
                migrate_timeout=r.maintenance_migrate_timeout,
                migrate_attempts=r.maintenance_migrate_attempts,
                on_state=self._maintenance_state,
            )
        )
        return Maintenance(
            MaintenanceWorkflows(steps),
            self.maintenances,
            self.cloud,
            self.ownership,
            emit=self.notifier.emit,
            audit=self.db.record_audit,
            host_state=self._host_state,
            lifecycle=lambda host, started, detail, trace: self.inspector.maintenance(
                host, started=started, detail=detail, trace_id=trace
            ),
            on_state=self._maintenance_state,
        )

    def _maintenance_state(self, host: str, state: str, left: list[str] | None) -> None:
        """A maintenance moved: once its migrations ended, how many servers it left on
        the host is what the inspector's loss gate counts (a Nova listing, newer than
        the notifications still on their way); at any other state, the topology."""
        if left is not None and state in ("EMPTY", "READY", "PARTIAL"):
            self._maintenance_left[host] = len(left)
        else:
            self._maintenance_left.pop(host, None)

    async def _load_maintenances(self, hosts: set[str] | None = None) -> None:
        """The open maintenances' counts of servers left (all, or these hosts')."""
        for host, m in (await asyncio.to_thread(self.maintenances.open_all)).items():
            if hosts is None or host in hosts:
                self._maintenance_state(host, m["state"], m["detail"].get("servers_left"))

    def _host_state(self, host: str) -> str:
        return self.inspector.host_states.life(host).state.value

    # -- several controllers ---------------------------------------------------------

    def _build_cluster(self, settings: Settings) -> None:
        """One controller owns every host; with a coordination backend, this one owns
        its share among the live members (``cluster`` in the configuration)."""
        self.shared: SharedOwnership | None = None
        self.ownership: Ownership = SoleController()
        self.quorum: PeerQuorum | None = None
        self.restart_asked = False
        self._takeovers: set[asyncio.Task[None]] = set()
        self._takeovers_keep: set[asyncio.Task[None]] = set()  # the checks, until the stop
        c = settings.cluster
        if c.coordination_url is None:
            return
        self.membership = Membership(
            c.coordination_url,
            c.member_id,
            c.api_url or base_url(settings.api),
            timeout=c.membership_timeout,
            on_view=self._cluster_view,
            on_lapsed=self._lapsed,
            group=c.group.encode(),
        )
        self.shared = SharedOwnership(
            c.member_id,
            {name: h.zone for name, h in settings.hosts.items()},
            HostStore(self.db),
            self.membership.lease_valid,
            on_gained=self._hosts_gained,
            on_lost=self._hosts_lost,
            on_isolated=self._isolated,
        )
        self.ownership = self.shared
        assert c.peer_token is not None  # the configuration checks it
        membership = self.membership
        self.quorum = PeerQuorum(
            c.member_id,
            lambda: membership.view.urls,
            c.peer_token.get_secret_value(),
            timeout=c.peer_timeout,
            # Heartbeats reach controllers a little apart: an interval of slack; a peer
            # that heard the host within one and a half never agrees it is silent.
            slack=settings.monitor.interval,
            floor=1.5 * settings.monitor.interval,
        )

    def _cluster_view(self, view: ClusterView) -> None:
        """The live members changed: hosts move, and the pending deliveries of a
        controller gone are shared out among the survivors like hosts."""
        assert self.shared is not None
        self.shared.on_view(view)
        if view.isolated or not view.members:
            return
        me = self.shared.member_id

        async def adopt() -> None:
            try:
                await self.notifier.outbox.adopt_orphans(
                    view.members, lambda alarm_id: owner_of(alarm_id, view.members) == me
                )
            except Exception:  # the store away: the next view or check tries again
                log.exception("could not take over the deliveries of controllers gone")

        task = asyncio.ensure_future(adopt())
        self._takeovers.add(task)
        task.add_done_callback(self._takeovers.discard)

    def _hosts_gained(self, hosts: set[str]) -> None:
        task = asyncio.ensure_future(self._take_over(hosts))
        self._takeovers.add(task)
        task.add_done_callback(self._takeovers.discard)

    async def _take_over(self, hosts: set[str]) -> None:
        """Hosts just claimed: taken over, and again (after TAKEOVER_RETRY s, doubling
        up to 5 s) while the store does not answer and this controller still holds them."""
        wait = TAKEOVER_RETRY
        while hosts := {h for h in hosts if self.ownership.holds(h)}:
            try:
                await self._take_over_once(hosts)
                return
            except Exception:  # the store (or the workflow store) away
                log.exception("could not take over %s: again in %g s", sorted(hosts), wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)

    async def _take_over_once(self, hosts: set[str]) -> None:
        """Their open incidents are adopted, the ones lost stay lost (no second
        verdict), the ones silent already are suspected, and their recoveries left
        pending by another executor resume here, on the hosts' lifecycle as their
        previous owner left it."""
        await self.inspector.host_states.reload(hosts)
        incidents = [i for i in await self.journal.load_open() if i.host in hosts]
        # A host lost again while the journal was read (two views applied back to back)
        # is its new owner's: a copy of its incident kept here would never be forgotten.
        hosts = {h for h in hosts if self.ownership.holds(h)}
        incidents = [i for i in incidents if i.host in hosts and i.host not in self.inspector.open]
        self.inspector.adopt(incidents)
        if self.monitor is not None:
            for inc in incidents:
                if inc.host_lost:
                    self.monitor.presume_lost(inc.host)
            self.monitor.taken(hosts)
        if self.recovery is not None:
            await self._take_over_recoveries(self.recovery, incidents)
            # The maintenances of these hosts go on here too (their migrations with them).
            open_ = await asyncio.to_thread(self.maintenances.open_all)
            ids = [workflow_id(m["id"]) for h, m in open_.items() if h in hosts]
            await self.recovery.take_over(ids)
            await self._load_maintenances(hosts)

    async def _take_over_recoveries(self, recovery: Recovery, incidents: list[Incident]) -> None:
        # The unrecorded start, the recorded resume here: none starts a second time.
        await self._start_unrecorded(recovery, incidents)
        running = [
            i.recovery_id for i in incidents if i.recovery_id and i.recovery_ended_at is None
        ]
        await recovery.take_over(running)

    async def _start_unrecorded(self, recovery: Recovery, incidents: list[Incident]) -> None:
        """The recoveries (first ones or retries) a dying controller decided on but never
        recorded in the workflow store start here, under the ids their incidents hold."""
        unstarted = [
            i
            for i in incidents
            if i.host_lost
            and i.recovery_ended_at is None
            and (i.recovery_id is None or not await recovery.recorded(i.recovery_id))
        ]
        if unstarted:
            await self.sync.ready.wait()  # the servers' states before the fault
            for inc in unstarted:
                self.inspector.recover_adopted(inc)

    def _incident_conflict(self, body: dict[str, Any]) -> None:
        """The store refused an incident: its host has another open one, another
        controller's. Ours leaves memory (from the journal's thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.inspector.drop, body["id"], body["host"])

    def _hosts_lost(self, hosts: set[str]) -> None:
        if n := self.inspector.forget(hosts):
            log.info("%d open incidents left to the hosts' new owners", n)

    def _isolated(self, isolated: bool) -> None:
        assert self.shared is not None
        traits = {"controller": self.shared.member_id, "isolated": isolated}
        severity = "critical" if isolated else "ok"
        self.notifier.emit([Event(CONTROLLER_ISOLATED, time.time(), traits, severity=severity)])

    def _lapsed(self) -> None:
        """This controller was not heard for a whole membership timeout (paused, or cut
        off): the others took its hosts and what it had started. It stops and starts
        afresh, so that nothing it held in memory goes on."""
        log.critical(
            "%s was replaced while it was not heard from: restarting afresh",
            self.shared.member_id if self.shared else "this controller",
        )
        self.restart_asked = True
        if self._server is not None:
            self._server.should_exit = True
        self.changes.close()

    def _nova_view(self, host: str, view: dict[str, Any], as_of: float) -> None:
        self.inspector.on_service_view(host, ServiceView.of(view, as_of))

    def _recovery_progress(
        self, incident_id: str, recovery_id: str, state: str, at: float, ended: bool
    ) -> None:
        """A recovery recorded a state: the inspector follows it; once it has ended, the
        fault's profile is exported. Thread-safe: a workflow step may run off the loop."""
        if self._loop is None:
            return
        self.changes.publish(RECOVERIES, recovery_id, state=state, ended=ended)
        self._loop.call_soon_threadsafe(
            self.inspector.recovery_progress, incident_id, recovery_id, state, at, ended
        )
        if ended:
            self._loop.call_soon_threadsafe(self.fault_over, incident_id)

    def _restart_compute(self, host: str) -> bool:
        return self.monitor is not None and self.monitor.request_compute_restart(host)

    def _compute_alive(self, host: str) -> bool | None:
        return self.monitor.compute_alive(host) if self.monitor is not None else None

    def _scraper(self) -> uvicorn.Server | None:
        """The metrics' own listener (``metrics.listen``), without a token, answering
        the scraper networks only; None when it is off."""
        address = self.settings.metrics.address()
        if address is None:
            return None
        app = scraper_app(self.metrics, self.settings.metrics.scraper_networks)
        host, port = address
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        log.info("metrics for scrapers on %s (no token)", self.settings.metrics.listen)
        return _Listener(config)

    def _scraper_socket(self) -> socket.socket:
        address = self.settings.metrics.address()
        assert address is not None
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)

    def _checkpoint(self, trace_id: str | None, mark: str, at: float) -> None:
        """The notifier's marks: the incident keeps each one's first, the metrics the
        last webhook received."""
        self.inspector.checkpoint(trace_id, mark, at)
        self.metrics.faults.checkpoint(trace_id, mark, at)

    def fault_over(self, incident_id: str, body: dict[str, Any] | None = None) -> None:
        """A fault ended (recovery over, or incident closed): its profile's stage times
        go to the metrics (once), and the profile to the span exporter."""
        if body is None:
            live = [i for i in self.inspector.open.values() if i.id == incident_id]
            body = live[0].as_dict() if live else None
        task = asyncio.ensure_future(asyncio.to_thread(self._fault_profile, incident_id, body))
        self._exports.add(task)
        task.add_done_callback(self._exports.discard)

    def _fault_profile(self, incident_id: str, body: dict[str, Any] | None) -> None:
        try:
            body = body or IncidentStore(self.db).get(incident_id)
            if body is None:
                return
            rid = body.get("recovery_id")
            recovery = RecoveryStore(self.db).get(rid) if rid else None
            profile = incident_profile(body, recovery)
            faults = self.metrics.faults
            last = faults.last_received(body["trace_id"])
            faults.fault_over(incident_id, body["kind"], profile, recovery, last)
        except ValueError:  # no checkpoint at all (an incident from an older version)
            return
        except Exception:  # metrics are an aid: never a reason to fail anything
            log.exception("could not read the profile of incident %s", incident_id)
            return
        if self.spans is None:
            return
        try:
            self.spans.export(
                profile,
                {
                    "medevac.incident_id": incident_id,
                    "medevac.host": body["host"],
                    "medevac.kind": body["kind"],
                    "medevac.trace_id": body["trace_id"],
                },
            )
        except Exception:  # tracing is an aid: never a reason to fail anything
            log.exception("could not export the profile of incident %s", incident_id)

    async def _follow_cloud_at_start(self) -> None:
        """Before any new verdict, each open incident learns whether its recovery ended
        and how Nova shows its host: one released by hand while no controller ran
        closes now, and a new loss of its host is a new incident."""
        incidents = list(self.inspector.open.values())
        store = RecoveryStore(self.db)
        for inc in incidents:
            if inc.recovery_id is None or inc.recovery_ended_at is not None:
                continue
            rec = await asyncio.to_thread(store.get, inc.recovery_id)
            if rec is not None and rec["ended_at"] is not None:
                self.inspector.recovery_progress(
                    inc.id, inc.recovery_id, rec["state"], rec["ended_at"], True
                )
        if not incidents:
            return
        asked = time.time()
        try:
            services = await CloudNovaView(self.cloud).compute_services()
        except Exception as exc:  # the monitor's poll catches up once Nova answers
            log.warning(
                "Nova's compute services not read at start (%s: %s)", type(exc).__name__, exc
            )
            return
        for host, view in services.items():
            self.inspector.on_service_view(host, ServiceView.of(view, asked))

    def on_nova_event(self, event: NovaEvent) -> None:
        if self.monitor is not None:
            self.monitor.on_nova_event(event)
        self.inspector.topology.on_instance_notification(event.event_type, event.payload)
        self.task_ends.on_instance_notification(event.event_type, event.payload)

    async def run(self) -> None:
        """Migrate, serve until SIGTERM/SIGINT, then shut down cleanly."""
        await asyncio.to_thread(self.db.migrate)
        loop = self._loop = asyncio.get_running_loop()
        self.changes.bind(loop)
        # Before anything can fire: the alarms, the outbox, the incidents still open,
        # and the recoveries a dead predecessor left running (DBOS resumes them).
        resumed = await self.notifier.start()
        if self.recovery is not None:
            DBOS.launch()
            await self.recovery.launched()
        await self.host_states.load()
        self.host_states.start()
        await self._load_maintenances()
        adopted: list[Incident] = []
        if self.membership is None:
            adopted = await self.journal.load_open()
            self.inspector.adopt(adopted)
            await self._follow_cloud_at_start()
        else:
            # Incidents and recoveries are adopted host by host, as they are claimed.
            self.membership.start(loop)
            assert self.shared is not None
            membership = self.membership
            checking = asyncio.create_task(
                self.shared.keep_checking(
                    self.settings.cluster.membership_timeout,
                    # A lease run out is isolation, even while the membership
                    # thread still waits on a backend that does not answer.
                    lambda: (
                        membership.view
                        if membership.lease_valid()
                        else ClusterView(frozenset(), isolated=True)
                    ),
                    self._cluster_view,
                )
            )
            self._takeovers_keep.add(checking)
            # Alarms made through another controller are evaluated here within a second.
            self._takeovers_keep.add(asyncio.create_task(self.notifier.follow_store(0.5)))
            # Serving does not wait long on a backend that does not answer: hosts are
            # claimed whenever the first view comes.
            if not await self.membership.joined(3 * self.settings.cluster.membership_timeout):
                log.critical(
                    "%s could not join the controllers' group (%s): it owns no host yet",
                    self.settings.cluster.member_id,
                    self.membership.last_error,
                )
        if self.monitor is not None:
            for inc in self.inspector.open.values():
                if inc.host_lost:
                    self.monitor.presume_lost(inc.host)
        self.journal.start()
        sync_task = asyncio.create_task(self.sync.run())
        checkpoints = asyncio.create_task(
            self.db.run_checkpoints(self.settings.storage.checkpoint_interval)
        )
        keep = self.settings.retention
        policy = retention_policy(keep)
        retention = asyncio.create_task(run_retention(self.db, policy, keep.interval))

        async def resume_corrections() -> None:
            await self.sync.ready.wait()
            if n := self.inspector.resume():
                log.info("resumed %d state corrections left unfinished", n)
            if adopted and self.recovery is not None:
                # DBOS resumed the recorded recoveries at launch; these it never had.
                try:
                    still = [i for i in adopted if self.inspector.open.get(i.host) is i]
                    await self._start_unrecorded(self.recovery, still)
                except Exception:  # the workflow store away: they start at the next start
                    log.exception("recoveries left unrecorded at the last stop not started")

        resume_task = asyncio.create_task(resume_corrections())
        log.info(
            "%d alarms, %d open incidents, %d deliveries resumed",
            len(self.notifier.index),
            len(self.inspector.open),
            resumed,
        )
        monitor_task: asyncio.Task[None] | None = None
        transport: DrainingDatagramTransport | None = None
        monitor = self.monitor
        if monitor is not None:
            m = self.settings.monitor
            transport = await open_draining_endpoint(monitor, m.listen_host, m.listen_port)
            monitor_task = asyncio.create_task(monitor.run())
            if m.nova_notifications_url:
                self.listener = NovaNotificationListener(
                    m.nova_notifications_url, self.on_nova_event, loop
                )
                self.listener.start()
        app = self.make_app(
            self.settings,
            self.db,
            monitor=self.monitor,
            inspector=self.inspector,
            notifier=self.notifier,
            cluster=self.shared.status if self.shared is not None else None,
            metrics=self.metrics,
            changes=self.changes,
            maintenance=self.maintenance,
        )
        # Everything built so far lives as long as the process: keep it out of the
        # cyclic collector's full passes, which would otherwise pause the heartbeat loop
        # for 0.1 s or more with thousands of hosts.
        gc.freeze()
        config = server_config(
            app,
            self.settings.api,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # The client address is the TCP peer's, never X-Forwarded-For: fault reports
            # from monitor.tokenless_fault_networks are judged on it.
            proxy_headers=False,
            # A stop (or a restart after a lapsed lease) waits this long at most for the
            # requests still being answered: a hung client never holds the process.
            timeout_graceful_shutdown=GRACEFUL_STOP,
        )
        server = self._server = uvicorn.Server(config)
        scraper = self._scraper()
        scraping = None
        if scraper is not None:
            scraper_socket = self._scraper_socket()  # a port taken fails the start here
            scraping = asyncio.create_task(scraper.serve(sockets=[scraper_socket]))

        def stop_asked() -> None:
            self.restart_asked = False  # a stop asked while restarting is a stop
            server.should_exit = True
            self.changes.close()  # open streams end now: the stop waits on no browser

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_asked)
        log.info(
            "medevac serving on %s (storage %s, %d hosts watched)",
            base_url(self.settings.api),
            self.db.display_url,
            len(self.settings.hosts),
        )
        try:
            await server.serve()
        finally:
            if scraper is not None and scraping is not None:
                scraper.should_exit = True
                with contextlib.suppress(Exception):
                    await scraping
            if self.membership is not None:
                await asyncio.to_thread(self.membership.stop)  # the others take over now
            if self.quorum is not None:
                await self.quorum.close()
            for t in self._takeovers | self._takeovers_keep:
                t.cancel()
            if monitor_task is not None:
                monitor_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor_task
            if transport is not None:
                transport.close()
            if self.listener is not None:
                await asyncio.to_thread(self.listener.stop)
            sync_task.cancel()
            resume_task.cancel()
            checkpoints.cancel()
            retention.cancel()
            app.state.health.close()
            await self.inspector.drain()
            await self.notifier.close()
            if self.recovery is not None:
                DBOS.destroy(workflow_completion_timeout_sec=0)
                # DBOS made its pool the loop's default executor and has shut it down:
                # what is left to write (audit, incidents, exports) needs threads still.
                loop.set_default_executor(ThreadPoolExecutor(4, thread_name_prefix="stop"))
            await self.audit.drain()
            await self.journal.close()
            await self.host_states.close()
            await asyncio.gather(*self._exports, return_exceptions=True)
            if self.spans is not None:
                await asyncio.to_thread(self.spans.close)
            if self.power is not None:
                await self.power.close()
            self.bmc_threads.shutdown(wait=False, cancel_futures=True)
            await self.cloud.close()
            self.db.dispose()

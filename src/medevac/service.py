"""Service wiring: builds the controller's parts from the configuration and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import uvicorn
from dbos import DBOS
from starlette.applications import Starlette

from medevac.bmc.ipmi import IpmiClient, IpmiTarget
from medevac.bmc.power import BmcPowerReader, PowerControl
from medevac.bmc.redfish import RedfishClient, RedfishTarget
from medevac.cloud import CloudDriver
from medevac.cloud.nova_events import NovaEvent, NovaNotificationListener
from medevac.cloud.nova_view import CloudNovaView
from medevac.config import (
    BmcDriver,
    CloudConfig,
    ConfigError,
    HostGroupConfig,
    MonitorConfig,
    RetentionConfig,
    Settings,
)
from medevac.inspector.actions import ResetPolicy
from medevac.inspector.executor import ActionExecutor, RetryPolicy
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.host_states import HostStates
from medevac.inspector.incidents import Incident, ServiceView
from medevac.inspector.inspector import Inspector, InspectorSettings
from medevac.inspector.journal import IncidentJournal
from medevac.inspector.sync import TopologySync
from medevac.inspector.topology import Topology
from medevac.monitor.hosts import HostMonitor, MonitorSettings
from medevac.monitor.udp import DrainingDatagramTransport, open_draining_endpoint
from medevac.monitor.verdicts import Verdict, VerdictSink
from medevac.notifier.alarms import ActionTargets
from medevac.notifier.bus import BusPublisher
from medevac.notifier.delivery import CheckpointHook, DeliverySettings, Outbox
from medevac.notifier.notifier import Channel, Notifier
from medevac.notifier.snmp import SnmpTraps, TrapManager, parse_oid
from medevac.profiler.profile import incident_profile
from medevac.profiler.tracing import SpanExport
from medevac.recovery.fence import BmcFencer
from medevac.recovery.policy import HostGroup, Level, RecoveryMethod, group_of
from medevac.recovery.runtime import RecoveryRuntime, RecoverySettings
from medevac.recovery.starter import Recovery
from medevac.recovery.steps import RecoverySteps
from medevac.recovery.task_ends import TaskEnds
from medevac.recovery.workflows import RecoveryWorkflows, configure_dbos
from medevac.serving import base_url, server_config
from medevac.storage import Database
from medevac.storage.records import (
    AlarmStore,
    HostStore,
    IncidentStore,
    OutboxStore,
    RecoveryStore,
)
from medevac.storage.retention import RetentionPolicy, run_retention

log = logging.getLogger(__name__)


def build_cloud_driver(cfg: CloudConfig) -> CloudDriver:
    return CloudDriver(
        cfg.name,
        clouds_yaml=cfg.clouds_yaml,
        max_workers=cfg.max_workers,
        call_timeout=cfg.call_timeout,
        compute_microversion_cap=cfg.microversion_cap(),
    )


def monitor_settings(cfg: MonitorConfig) -> MonitorSettings:
    """The detector's tunables from the configuration; the rest keep the monitor's own."""
    return MonitorSettings(
        interval=cfg.interval,
        phi_threshold=cfg.phi_threshold,
        max_clock_skew=cfg.max_clock_skew,
        probes=cfg.probes,
        probe_timeout=cfg.probe_timeout,
        bmc_timeout=cfg.bmc_timeout,
        bmc_verdict_wait=cfg.bmc_verdict_wait,
        bmc_refresh=cfg.bmc_refresh,
        isolation_fraction=cfg.isolation_fraction,
        isolation_window=cfg.isolation_window,
        isolation_min_hosts=cfg.isolation_min_hosts,
    )


def bmc_thread_pool(hosts: int) -> ThreadPoolExecutor:
    """The threads every BMC call runs in, and nothing else.

    Fencing must not queue behind database writes, workflow steps or API reads in
    asyncio's default executor (a few threads on a small controller): a call that
    waits there for a thread misses its deadline and reads as a BMC that does not
    answer. Each client runs one call at a time, plus at most one abandoned call
    that pyghmi is still giving up on, so two threads per host cover every BMC
    at once up to the cap.
    """
    return ThreadPoolExecutor(max_workers=max(4, min(64, 2 * hosts)), thread_name_prefix="bmc")


def build_bmc_clients(
    settings: Settings, executor: ThreadPoolExecutor | None = None
) -> dict[str, PowerControl]:
    """One BMC client per host (IPMI or Redfish), shared by the monitor (reads) and
    recovery (fencing): pyghmi shares a session per BMC and user, so two clients
    would collide on it."""
    creds = settings.bmc_credentials()
    clients: dict[str, PowerControl] = {}
    timeout = settings.monitor.bmc_timeout
    for host, cfg in settings.hosts.items():
        if host not in creds:
            raise ConfigError(f"hosts.{host}: no BMC credentials in {settings.bmc_secrets_file}")
        c = creds[host]
        password = c.password.get_secret_value()
        if cfg.bmc_driver is BmcDriver.REDFISH:
            target = RedfishTarget(
                cfg.redfish_url, c.username, password, cfg.redfish_system, cfg.redfish_verify
            )
            clients[host] = RedfishClient(target, timeout=timeout, executor=executor)
        else:
            ipmi = IpmiTarget(cfg.bmc_address, cfg.port, c.username, password)
            clients[host] = IpmiClient(ipmi, timeout=timeout, executor=executor)
    return clients


class AuditLog:
    """Audit entries written off the event loop, a moment later: the milliseconds
    after a verdict belong to the alarms' outbox."""

    DELAY = 0.05

    def __init__(self, db: Database) -> None:
        self._db = db
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


def build_notifier(
    settings: Settings, db: Database, on_checkpoint: CheckpointHook | None = None
) -> Notifier:
    n = settings.notifier
    delivery = DeliverySettings(
        timeout=n.delivery_timeout,
        retry_initial=n.retry_initial,
        retry_max_interval=n.retry_max_interval,
        retry_for=n.retry_for,
        connections_per_consumer=n.connections_per_consumer,
        breaker_failures=n.breaker_failures,
        targets=ActionTargets(
            allow=tuple(n.action_allow_networks), deny=tuple(n.action_deny_networks)
        ),
    )
    alarms = AlarmStore(db)
    traps = SnmpTraps(
        (
            TrapManager(m.host, m.port, m.community.get_secret_value(), tuple(m.event_types))
            for m in n.snmp_managers
        ),
        parse_oid(n.snmp_oid_base),
    )
    channels: list[Channel] = [traps]
    if n.bus_url:
        channels.append(BusPublisher(n.bus_url, n.bus_exchange, n.bus_topic))
    outbox = Outbox(alarms, OutboxStore(db), delivery, on_checkpoint=on_checkpoint)
    return Notifier(alarms, outbox, channels=channels)


def retention_policy(cfg: RetentionConfig) -> RetentionPolicy:
    """How long each kind of record is kept, from the configuration."""
    return RetentionPolicy(
        deliveries_days=cfg.deliveries_days,
        verdicts_days=cfg.verdicts_days,
        incidents_days=cfg.incidents_days,
        alarm_history_days=cfg.alarm_history_days,
        audit_days=cfg.audit_days,
        batch=cfg.batch,
        pause=cfg.pause,
    )


def host_group(g: HostGroupConfig) -> HostGroup:
    return HostGroup(
        name=g.name,
        hosts=tuple(g.hosts),
        level=Level(g.level),
        recovery_method=RecoveryMethod(g.recovery_method),
        reserved_hosts=tuple(g.reserved_hosts),
        evacuate_all=g.evacuate_all,
        ignore_error_servers=g.ignore_error_servers,
        on_shared_storage=g.on_shared_storage,
        concurrency=g.concurrency,
        auto_release=g.auto_release,
    )


def build_inspector(
    settings: Settings,
    cloud: CloudDriver,
    notifier: Notifier,
    journal: IncidentJournal,
    audit: AuditLog,
    host_states: HostStates,
    recovery: Recovery | None = None,
    on_closed: Callable[[Incident], Any] | None = None,
) -> Inspector:
    i = settings.inspector
    groups = [host_group(g) for g in settings.recovery.groups]
    return Inspector(
        {name: h.zone for name, h in settings.hosts.items()},
        Topology(),
        ActionExecutor(
            cloud,
            concurrency=i.action_concurrency,
            retry=RetryPolicy(attempts=i.action_attempts, backoff=i.action_backoff),
        ),
        notifier,
        journal,
        ZoneGuard(i.guard_fraction, i.guard_window, i.guard_min_hosts, i.guard_hold),
        InspectorSettings(
            reset_servers=ResetPolicy(i.reset_servers),
            act=i.act,
            notify_head_start=i.notify_head_start,
            restart_compute=settings.recovery.restart_compute,
        ),
        recovery=recovery,
        audit=audit,
        host_states=host_states,
        on_closed=on_closed,
        auto_release=lambda host: group_of(host, groups).auto_release,
    )


class AppFactory(Protocol):
    def __call__(
        self,
        settings: Settings,
        db: Database,
        monitor: HostMonitor | None = None,
        inspector: Inspector | None = None,
        notifier: Notifier | None = None,
    ) -> Starlette:
        """The controller's API over its blocks (the surface passes its own)."""
        ...


class Controller:
    """One controller process: storage, API, monitor, and (as they land) the other blocks.
    ``make_app`` builds its API: the surfaces pass it, so the wiring imports none."""

    def __init__(self, settings: Settings, make_app: AppFactory) -> None:
        self.settings = settings
        self.make_app = make_app
        self._loop: asyncio.AbstractEventLoop | None = None  # set once running
        self.db = Database(settings.storage.url)
        self.cloud = build_cloud_driver(settings.cloud)
        self.power: BmcPowerReader | None = None
        self.monitor: HostMonitor | None = None
        self.listener: NovaNotificationListener | None = None
        # A recovery's waits on servers wake when Nova says their task ended.
        self.task_ends = TaskEnds(lambda: self.listener is not None and self.listener.connected)
        # The notifier's marks go to the incident their events came from: the inspector,
        # built below, is looked up when a mark comes.
        self.notifier = build_notifier(
            settings, self.db, lambda trace, mark, at: self.inspector.checkpoint(trace, mark, at)
        )
        p = settings.profiler
        self.spans = SpanExport.from_settings(p.otel_exporter, p.otel_endpoint, p.otel_service_name)
        self._exports: set[asyncio.Task[None]] = set()
        self.journal = IncidentJournal(IncidentStore(self.db))
        self.audit = AuditLog(self.db)
        self.bmc_threads = bmc_thread_pool(len(settings.hosts))
        bmcs = build_bmc_clients(settings, self.bmc_threads)
        r = settings.recovery
        self.recovery: Recovery | None = None
        if r.enabled:
            # The recovery waits on the inspector, which starts it: the waits are looked
            # up when a step runs, once both exist.
            steps = RecoverySteps(
                RecoveryRuntime(
                    cloud=self.cloud,
                    fencer=BmcFencer(
                        bmcs,
                        check_interval=r.check_interval,
                        check_max_count=r.check_max_count,
                    ),
                    store=RecoveryStore(self.db),
                    groups=[host_group(g) for g in r.groups],
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
                    restart_compute=self._restart_compute if r.restart_compute else None,
                    compute_alive=self._compute_alive if r.restart_compute else None,
                )
            )
            self.recovery = Recovery(RecoveryWorkflows(steps))
            configure_dbos(r.workflows_url(settings.storage.url))
        self.host_states = HostStates(HostStore(self.db))
        self.inspector = build_inspector(
            settings,
            self.cloud,
            self.notifier,
            self.journal,
            self.audit,
            self.host_states,
            self.recovery,
            on_closed=(
                (lambda inc: self.fault_over(inc.id, inc.as_dict()))
                if self.spans is not None
                else None
            ),
        )
        self.sync = TopologySync(
            self.cloud, self.inspector.topology, settings.inspector.resync_interval
        )
        if settings.hosts:
            self.power = BmcPowerReader(bmcs)
            self.monitor = HostMonitor(
                {name: h.zone for name, h in settings.hosts.items()},
                settings.agent_key(),
                VerdictFanout(self.inspector, VerdictAudit(self.audit)),
                self.power,
                CloudNovaView(self.cloud),
                monitor_settings(settings.monitor),
                on_suspect=self.inspector.prepare,
                on_nova_view=self._nova_view,
                accept_master_key=settings.monitor.accept_master_key,
            )

    def _nova_view(self, host: str, view: dict[str, Any], as_of: float) -> None:
        self.inspector.on_service_view(host, ServiceView.of(view, as_of))

    def _recovery_progress(
        self, incident_id: str, recovery_id: str, state: str, at: float, ended: bool
    ) -> None:
        """A recovery recorded a state: the inspector follows it; once it has ended, the
        fault's profile is exported. Thread-safe: a workflow step may run off the loop."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(
            self.inspector.recovery_progress, incident_id, recovery_id, state, at, ended
        )
        if ended and self.spans is not None:
            self._loop.call_soon_threadsafe(self.fault_over, incident_id)

    def _restart_compute(self, host: str) -> bool:
        return self.monitor is not None and self.monitor.request_compute_restart(host)

    def _compute_alive(self, host: str) -> bool | None:
        return self.monitor.compute_alive(host) if self.monitor is not None else None

    def fault_over(self, incident_id: str, body: dict[str, Any] | None = None) -> None:
        """A fault ended (recovery over, or incident closed): export its profile."""
        if body is None:
            live = [i for i in self.inspector.open.values() if i.id == incident_id]
            body = live[0].as_dict() if live else None
        task = asyncio.ensure_future(asyncio.to_thread(self._export_profile, incident_id, body))
        self._exports.add(task)
        task.add_done_callback(self._exports.discard)

    def _export_profile(self, incident_id: str, body: dict[str, Any] | None) -> None:
        assert self.spans is not None
        try:
            body = body or IncidentStore(self.db).get(incident_id)
            if body is None:
                return
            rid = body.get("recovery_id")
            recovery = RecoveryStore(self.db).get(rid) if rid else None
            profile = incident_profile(body, recovery)
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
        # Before anything can fire: the alarms, the outbox, the incidents still open,
        # and the recoveries a dead predecessor left running (DBOS resumes them).
        resumed = await self.notifier.start()
        if self.recovery is not None:
            DBOS.launch()
        await self.host_states.load()
        self.host_states.start()
        self.inspector.adopt(await self.journal.load_open())
        await self._follow_cloud_at_start()
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
        )
        server = uvicorn.Server(config)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        log.info(
            "medevac serving on %s (storage %s, %d hosts watched)",
            base_url(self.settings.api),
            self.db.display_url,
            len(self.settings.hosts),
        )
        try:
            await server.serve()
        finally:
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
            if self.spans is not None:
                await asyncio.gather(*self._exports, return_exceptions=True)
                await asyncio.to_thread(self.spans.close)
            if self.power is not None:
                await self.power.close()
            self.bmc_threads.shutdown(wait=False, cancel_futures=True)
            await self.cloud.close()
            self.db.dispose()

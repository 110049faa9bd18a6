"""From the configuration to each block: its settings mapped key by key, its
collaborators passed through its constructor."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from medevac.bmc.ipmi import IpmiClient, IpmiTarget
from medevac.bmc.power import PowerControl
from medevac.bmc.redfish import RedfishClient, RedfishTarget
from medevac.bmc.threads import DaemonThreads
from medevac.cloud import CloudDriver
from medevac.cluster.ownership import Ownership
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
from medevac.inspector.incidents import Incident
from medevac.inspector.inspector import Inspector, InspectorSettings
from medevac.inspector.journal import IncidentJournal
from medevac.inspector.topology import Topology
from medevac.monitor.hosts import MonitorSettings
from medevac.notifier.bus import BusPublisher
from medevac.notifier.delivery import CheckpointHook, DeliverySettings
from medevac.notifier.notifier import Channel, Notifier
from medevac.notifier.snmp import SnmpTraps, TrapManager, parse_oid
from medevac.recovery.policy import HostGroup, Level, RecoveryMethod, group_of
from medevac.recovery.starter import Recovery
from medevac.service.audit import AuditLog
from medevac.storage import Database
from medevac.storage.records import (
    AlarmStore,
    OutboxStore,
)
from medevac.storage.retention import RetentionPolicy


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


def bmc_thread_pool(hosts: int) -> DaemonThreads:
    """The threads every BMC call runs in, and nothing else.

    Fencing must not queue behind database writes, workflow steps or API reads in
    asyncio's default executor (a few threads on a small controller): a call that
    waits there for a thread misses its deadline and reads as a BMC that does not
    answer. Each client runs one call at a time, plus at most one abandoned call
    that pyghmi is still giving up on, so two threads per host cover every BMC
    at once up to the cap. Daemon threads: a call to a silent BMC does not hold up
    the controller's exit.
    """
    return DaemonThreads(max_workers=max(4, min(64, 2 * hosts)), thread_name_prefix="bmc")


def build_bmc_clients(
    settings: Settings, executor: Executor | None = None
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


def build_notifier(
    settings: Settings,
    db: Database,
    on_checkpoint: CheckpointHook | None = None,
    may_send: Callable[[], bool] | None = None,
) -> Notifier:
    n = settings.notifier
    delivery = DeliverySettings(
        timeout=n.delivery_timeout,
        retry_initial=n.retry_initial,
        retry_max_interval=n.retry_max_interval,
        retry_for=n.retry_for,
        connections_per_consumer=n.connections_per_consumer,
        breaker_failures=n.breaker_failures,
        targets=n.action_targets(),
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
    return Notifier(
        alarms,
        OutboxStore(db),
        delivery,
        on_checkpoint=on_checkpoint,
        channels=channels,
        member_id=settings.cluster.member_id if settings.cluster.enabled else None,
        may_send=may_send,
    )


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
        maintenance_migrate_all=g.maintenance_migrate_all,
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
    ownership: Ownership | None = None,
    maintenance_left: Callable[[str], int | None] = lambda host: None,
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
            ownership=ownership,
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
        maintenance_left=maintenance_left,
    )

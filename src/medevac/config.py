"""Controller configuration: one TOML file plus ``MEDEVAC_*`` environment overrides.

The file is named by ``--config`` or ``MEDEVAC_CONFIG``. Nested keys are overridden
from the environment with ``__`` between levels (``MEDEVAC_API__PORT=9000``).
OpenStack credentials never live here: ``cloud.name`` picks an entry of clouds.yaml.
Secrets (API tokens, BMC passwords) are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import enum
import os
import socket
import tomllib
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from medevac.monitor.hosts import MonitorSettings
from medevac.notifier.alarms import ActionTargets
from medevac.recovery.policy import HostGroup
from medevac.storage.models import NAME_LENGTH
from medevac.storage.retention import RetentionPolicy

# The blocks own their tunables' defaults; the configuration exposes and checks them.
_MONITOR = MonitorSettings()
_GROUP = HostGroup()
_RETENTION = RetentionPolicy()

CONFIG_ENV = "MEDEVAC_CONFIG"


class ConfigError(Exception):
    """The configuration is missing, unreadable or invalid; the message says where."""


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiToken(_Section):
    """A bearer token and who it stands for."""

    name: str = Field(
        min_length=1, max_length=NAME_LENGTH, description="who holds it; shown in the audit log"
    )
    token: SecretStr = Field(
        description="the secret, sent as X-Auth-Token or Authorization: Bearer; at least 16 "
        "characters, each token's own, never logged or echoed"
    )
    role: Role = Field(
        description="admin: everything; reader: read everything, change nothing; "
        "member: its own project's resources"
    )
    project_id: str | None = Field(
        default=None,
        max_length=NAME_LENGTH,
        description="the project a member stands for; required for role member",
    )

    @model_validator(mode="after")
    def _member_needs_project(self) -> ApiToken:
        if self.role is Role.MEMBER and not self.project_id:
            raise ValueError(f"token {self.name!r}: role 'member' needs a project_id")
        if len(self.token.get_secret_value()) < 16:
            raise ValueError(f"token {self.name!r}: must be at least 16 characters")
        return self


class ApiConfig(_Section):
    """The HTTP API and who may call it."""

    host: str = Field(default="127.0.0.1", description="the address the API listens on")
    port: int = Field(default=8780, ge=0, le=65535, description="the API's TCP port")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="larger request bodies are refused with 413"
    )
    tokens: list[ApiToken] = Field(
        default_factory=list,
        description="the API's tokens, one table each; none: every route but /healthz answers 401",
    )
    alarm_quota: int = Field(
        default=1000,
        ge=1,
        description="alarms one project may hold (the operators' own alarms count as one "
        "project); past it, creating one answers 403",
    )
    rate_limit: float = Field(
        default=50.0,
        ge=0,
        description="requests per second each token may make on average (requests without "
        "a token: each client address); past it 429 with Retry-After; 0: no limit",
    )
    rate_burst: int = Field(
        default=200, ge=1, description="requests a token may make at once before rate_limit holds"
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve the API over HTTPS; with tls_key_file",
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _tokens_unique(self) -> ApiConfig:
        seen: set[str] = set()
        for t in self.tokens:
            value = t.token.get_secret_value()
            if value in seen:
                raise ValueError(f"token {t.name!r}: the same token value is configured twice")
            seen.add(value)
        return self


class KeystoneConfig(_Section):
    """Keystone tokens, accepted by the API beside api.tokens: a token not seen before is
    validated once in Keystone (as the service user below), then trusted until
    cache_seconds pass or it expires. Roles map to the API's: admin to admin; member
    to a member of the token's project; reader (without member) to reader, when the
    token is system-scoped or scoped to one of reader_projects."""

    auth_url: str | None = Field(
        default=None,
        description="Keystone's v3 URL, e.g. http://keystone:5000/v3; unset: only api.tokens",
    )
    username: str = Field(
        default="medevac", description="the service user medevac validates tokens as"
    )
    password: SecretStr | None = Field(
        default=None, description="its password; required with auth_url, never logged"
    )
    project_name: str = Field(default="service", description="the service user's project")
    user_domain_name: str = Field(default="Default", description="the service user's domain")
    project_domain_name: str = Field(default="Default", description="its project's domain")
    interface: Literal["public", "internal", "admin"] = Field(
        default="public", description="which of the catalog's identity endpoints to call"
    )
    region_name: str | None = Field(
        default=None, description="the catalog region of that endpoint; unset: any"
    )
    cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description="how long a validated token is trusted before Keystone is asked again "
        "(a revoked token is refused at most this late; never past its expiry); 0: ask "
        "every time",
    )
    cache_size: int = Field(
        default=10_000, ge=1, description="tokens cached at most; the least recently used go"
    )
    reader_projects: list[str] = Field(
        default=["admin"],
        description="projects (by name) whose readers read every project, as system-scoped "
        "readers do; a reader of any other project is refused (403)",
    )
    timeout: float = Field(
        default=5.0,
        gt=0,
        description="one call to Keystone (s); past it, or if Keystone does not answer, 503",
    )
    cafile: Path | None = Field(
        default=None, description="CA bundle for an HTTPS Keystone; unset: the system's"
    )

    @property
    def enabled(self) -> bool:
        return self.auth_url is not None

    @model_validator(mode="after")
    def _password_with_url(self) -> KeystoneConfig:
        if self.auth_url is not None and self.password is None:
            raise ValueError("keystone.auth_url is set: keystone.password must be set too")
        return self


class CloudConfig(_Section):
    """The OpenStack cloud, reached through openstacksdk and clouds.yaml."""

    name: str = Field(default="openstack", description="entry of clouds.yaml")
    clouds_yaml: Path | None = Field(
        default=None, description="clouds.yaml to read; default: openstacksdk's search path"
    )
    max_workers: int = Field(default=16, ge=1, le=256, description="threads for blocking SDK calls")
    call_timeout: float = Field(
        default=30.0,
        gt=0,
        description="one call's deadline (s), counted from when a thread takes it, and the "
        "socket timeout; a call that waits this long for a thread is not sent; a page of a "
        "full listing gets at least 300 s",
    )
    compute_microversion_cap: str | None = Field(
        default=None,
        pattern=r"^2\.\d+$",
        description="never use a compute microversion above this (e.g. '2.52'); default: none",
    )

    def microversion_cap(self) -> tuple[int, int] | None:
        if self.compute_microversion_cap is None:
            return None
        major, minor = self.compute_microversion_cap.split(".")
        return int(major), int(minor)


class StorageConfig(_Section):
    """The controller's own database: incidents, alarms, outbox, recoveries, audit."""

    url: str = Field(
        default="sqlite:///medevac.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    checkpoint_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="SQLite: copy the write-ahead log into the file this often (s), apart "
        "from the commits",
    )


class ClusterConfig(_Section):
    """Several active controllers sharing the hosts. Unset ``coordination_url``: one
    controller owns every host (the embedded default). Set: every controller joins the
    group, owns the hosts a hash over the live members gives it, and needs a shared
    ``storage.url`` (PostgreSQL) and workflow database."""

    coordination_url: str | None = Field(
        default=None,
        description="tooz backend: redis://host:6379 (keys in the namespace medevac.<group> "
        "unless ?namespace= is given), or etcd3+http://host:2379 (etcd 3)",
    )
    member_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="this controller's stable name in the group",
        json_schema_extra={"default_shown": "the machine's host name"},
    )
    membership_timeout: float = Field(
        default=3.0,
        ge=0.3,
        le=60,
        description="a controller not heard for this long (s) is gone; its hosts move",
    )
    api_url: str | None = Field(
        default=None,
        description="how the other controllers reach this one's API (default: its listener)",
    )
    peer_token: SecretStr | None = Field(
        default=None,
        description="the API token (one of api.tokens, reader or admin) controllers use to "
        "ask each other whether a host is silent; required with coordination_url",
    )
    peer_timeout: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="how long a loss verdict waits for the other controllers' word (s)",
    )
    group: str = Field(
        default="medevac-controllers",
        min_length=1,
        max_length=128,
        description="the group's name in the backend: one per set of controllers",
    )

    @property
    def enabled(self) -> bool:
        return self.coordination_url is not None


class RetentionConfig(_Section):
    """How long finished records are kept (in days; 0 keeps them forever). Purged in
    the background, in small batches with a pause between, never what is still open
    or pending."""

    deliveries_days: float = Field(
        default=_RETENTION.deliveries_days,
        ge=0,
        description="webhook deliveries done (delivered, failed, cancelled)",
    )
    verdicts_days: float = Field(
        default=_RETENTION.verdicts_days,
        ge=0,
        description="the monitor's verdicts (audit entries of kind verdict.*)",
    )
    incidents_days: float = Field(
        default=_RETENTION.incidents_days,
        ge=0,
        description="closed incidents, counted from their closing (and Masakari "
        "notifications, from their arrival: their status derives from the incidents)",
    )
    alarm_history_days: float = Field(
        default=_RETENTION.alarm_history_days,
        ge=0,
        description="alarm history (creation, changes, transitions, deletion)",
    )
    audit_days: float = Field(
        default=_RETENTION.audit_days,
        ge=0,
        description="every other audit entry (actions, releases, recoveries)",
    )
    interval: float = Field(
        default=3600.0, gt=0, description="how often a purge runs (s); the first one at start"
    )
    batch: int = Field(
        default=_RETENTION.batch,
        ge=1,
        le=10_000,
        description="rows deleted per transaction at most",
    )
    pause: float = Field(
        default=_RETENTION.pause,
        ge=0,
        le=60,
        description="wait between two batches (s): others write meanwhile",
    )


class BmcDriver(enum.StrEnum):
    IPMI = "ipmi"
    REDFISH = "redfish"


class HostConfig(_Section):
    """A compute host medevac watches: where its BMC answers."""

    bmc_driver: BmcDriver = Field(
        default=BmcDriver.IPMI, description="ipmi: IPMI 2.0 lanplus; redfish: Redfish over HTTP(S)"
    )
    bmc_address: str = Field(description="the BMC's IP address or host name")
    bmc_port: int | None = Field(
        default=None, ge=1, le=65535, description="default: 623 for IPMI, 443 for Redfish"
    )
    zone: str = Field(
        default="nova",
        max_length=NAME_LENGTH,
        description="the zone the isolation check and the mass-failure guard count it in",
    )
    redfish_scheme: Literal["https", "http"] = Field(
        default="https", description="Redfish only: the scheme of the BMC's URL"
    )
    redfish_system: str | None = Field(
        default=None, description="the ComputerSystem id; default: the BMC's only system"
    )
    redfish_verify: bool | str = Field(
        default=True, description="verify the BMC's TLS certificate, or a CA bundle path"
    )

    @property
    def port(self) -> int:
        if self.bmc_port is not None:
            return self.bmc_port
        return 623 if self.bmc_driver is BmcDriver.IPMI else 443

    @property
    def redfish_url(self) -> str:
        host = f"[{self.bmc_address}]" if ":" in self.bmc_address else self.bmc_address
        return f"{self.redfish_scheme}://{host}:{self.port}"


class MonitorConfig(_Section):
    """Heartbeat reception and failure detection."""

    listen_host: str = Field(
        default="127.0.0.1", description="the address agents send heartbeats to (UDP)"
    )
    listen_port: int = Field(
        default=8781, ge=0, le=65535, description="the UDP port agents send heartbeats to"
    )
    interval: float = Field(
        default=_MONITOR.interval, gt=0, description="the agents' heartbeat interval (s)"
    )
    phi_threshold: float = Field(
        default=_MONITOR.phi_threshold,
        gt=0,
        description="suspect a host when phi reaches this (8: one chance in 10^8 of a "
        "live host being that late); lower detects faster, higher suspects less",
    )
    max_clock_skew: float = Field(
        default=_MONITOR.max_clock_skew,
        gt=0,
        description="drop heartbeats whose send time is further off than this (s)",
    )
    probes: int = Field(
        default=_MONITOR.probes,
        ge=1,
        le=10,
        description="direct probes to a suspect agent; any answer clears it",
    )
    probe_timeout: float = Field(
        default=_MONITOR.probe_timeout,
        gt=0,
        description="how long the probes wait for an answer (s)",
    )
    bmc_refresh: float = Field(
        default=_MONITOR.bmc_refresh,
        ge=0,
        description="read each BMC this often anyway (s): warm sessions, power as last "
        "seen; 0: only on suspicion",
    )
    bmc_timeout: float = Field(
        default=_MONITOR.bmc_timeout,
        gt=0,
        description="one BMC call, read or power off, login included (s)",
    )
    bmc_verdict_wait: float = Field(
        default=_MONITOR.bmc_verdict_wait,
        gt=0,
        description="how long a verdict waits for the BMC (s), counted from the suspicion, "
        "the probes' wait included; past it the verdict is HOST_UNREACHABLE and a later "
        "'power off' upgrades it to HOST_DOWN",
    )
    isolation_fraction: float = Field(
        default=_MONITOR.isolation_fraction,
        gt=0,
        le=1,
        description="this share of a zone gone silent together is OBSERVER_ISOLATED, not "
        "host verdicts",
    )
    isolation_window: float = Field(
        default=_MONITOR.isolation_window,
        gt=0,
        description="hosts silent for at most this long count as gone silent together (s); "
        "after a zone comes back, a host still silent this long after the first one "
        "returned is judged alone",
    )
    isolation_min_hosts: int = Field(
        default=_MONITOR.isolation_min_hosts,
        ge=2,
        description="smaller zones are never judged isolated",
    )
    nova_notifications_url: str | None = Field(
        default=None,
        description="RabbitMQ URL (rabbit:// or amqp://) of Nova's versioned notifications",
    )
    alertmanager_host_label: str = Field(
        default="instance", description="alert label naming the host (a :port is stripped)"
    )
    tokenless_fault_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="networks (CIDRs, e.g. 10.0.0.0/24) whose raw fault reports (PUT "
        "/events, the Alertmanager webhook) are taken without a token, as Doctor's "
        "monitors of inspector type 'sample' send them; judged on the TCP peer's "
        "address, never X-Forwarded-For; a token sent is still checked; empty: a "
        "token is always needed",
    )
    doctor_time_zone: str = Field(
        default="UTC",
        description="the zone a Doctor event's 'time' without an offset is read in "
        "(Doctor's monitors send their local time); an IANA name, e.g. Europe/Paris",
    )
    accept_master_key: bool = Field(
        default=False,
        description="also take heartbeats signed with the master key itself, as agents "
        "sharing one key did before per-host keys: for moving such a deployment over "
        "only (a host holding that key can forge any host's heartbeats); each host that "
        "uses it is logged and listed in the counters",
    )

    @field_validator("doctor_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:64]!r}") from None
        return value

    @property
    def doctor_zone(self) -> ZoneInfo:
        return ZoneInfo(self.doctor_time_zone)


class InspectorConfig(_Section):
    """State correction and the mass-failure guard."""

    act: bool = Field(
        default=True,
        description="false: observe and notify only, never change the cloud (shadow mode)",
    )
    reset_servers: Literal["error", "none"] = Field(
        default="error",
        description="servers of a lost host: reset to error (Doctor), or leave as they are",
    )
    resync_interval: float = Field(
        default=60.0,
        gt=0,
        description="full topology listing (s); Nova's notifications keep it fresh between",
    )
    notify_head_start: float = Field(
        default=0.05,
        ge=0,
        description="cloud calls wait for the alarms to be out, at most this long (s)",
    )
    action_concurrency: int = Field(default=32, ge=1, le=512, description="cloud calls at once")
    action_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="tries per action (5xx, 429, timeouts and 409 are retried)",
    )
    action_backoff: float = Field(default=0.2, gt=0, description="first retry wait (s), doubling")
    guard_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="share of a zone lost now (within the window) that holds the zone",
    )
    guard_window: float = Field(
        default=60.0, gt=0, description="hosts lost within this (s), and still lost, count"
    )
    guard_min_hosts: int = Field(default=3, ge=1, description="never hold for fewer hosts")
    guard_hold: float = Field(
        default=300.0, gt=0, description="a hold lasts this after its last trigger (s)"
    )


class SnmpManagerConfig(_Section):
    """An SNMP manager that receives a v2c trap per event."""

    host: str = Field(description="the manager's address")
    port: int = Field(default=162, ge=1, le=65535, description="the manager's UDP port")
    community: SecretStr = Field(description="the SNMPv2c community; a secret, never logged")
    event_types: list[str] = Field(
        default_factory=lambda: ["compute.host.*", "medevac.*"],
        min_length=1,
        description="shell wildcards of the event types sent (default: host-level events)",
    )


class NotifierConfig(_Section):
    """Webhook delivery of alarms, and SNMP traps."""

    delivery_timeout: float = Field(default=5.0, gt=0, description="one webhook POST (s)")
    action_allow_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="CIDRs alarm actions may send to although loopback, link-local, "
        "unspecified or multicast (refused by default), e.g. ['127.0.0.0/8'] for a "
        "consumer on the controller's machine",
    )
    action_deny_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="CIDRs alarm actions may never send to, allowed or not: the BMC and "
        "management networks",
    )
    action_resolve_timeout: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="how long creating or replacing an alarm waits for an action's host "
        "name to resolve (s); a name that does not resolve in time is refused",
    )
    retry_initial: float = Field(
        default=0.5,
        gt=0,
        description="first retry wait (s), doubling; each wait is jittered (between half and "
        "all of it)",
    )
    retry_max_interval: float = Field(
        default=10.0,
        gt=0,
        description="longest wait between retries (s): a consumer back from an outage "
        "waits at most this",
    )
    retry_for: float = Field(
        default=3600.0, gt=0, description="give a delivery up (failed) after this long (s)"
    )
    connections_per_consumer: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="kept-alive connections per consumer; a suspected host's are opened early",
    )
    breaker_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="a consumer's circuit opens after this many failed attempts in a row (no "
        "answer, 5xx, 408, 429): its deliveries then wait and one probe at a time goes out, "
        "until one succeeds",
    )
    snmp_oid_base: str = Field(
        default="1.3.6.1.3.7446",
        pattern=r"^\d+(\.\d+)+$",
        description="OID arc of medevac's traps; put it under your enterprise number",
    )
    snmp_managers: list[SnmpManagerConfig] = Field(
        default_factory=list, description="where traps go, one table each; none by default"
    )
    bus_url: str | None = Field(
        default=None,
        description="RabbitMQ URL: publish every event as an oslo.messaging notification",
    )
    bus_exchange: str = Field(
        default="medevac", min_length=1, description="the topic exchange events are published to"
    )
    bus_topic: str = Field(
        default="notifications",
        min_length=1,
        description="routing key <topic>.info, or <topic>.critical for critical events",
    )

    def action_targets(self) -> ActionTargets:
        """Where alarm actions may send, checked at creation and on each connection."""
        return ActionTargets(
            allow=tuple(self.action_allow_networks), deny=tuple(self.action_deny_networks)
        )


class HostGroupConfig(_Section):
    """A group of hosts recovered under one policy (a Masakari segment)."""

    name: str = Field(min_length=1, description="the group's name, in recoveries and events")
    hosts: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="shell wildcards of host names; a host belongs to the first group "
        "that matches it",
    )
    level: Literal[1, 2, 3] = Field(
        default=_GROUP.level.value,
        description="1: force down, no fencing (unsafe); 2: fence first; 3: wait for Nova "
        "to see the service down",
    )
    recovery_method: Literal["auto", "reserved_host", "auto_priority", "rh_priority"] = Field(
        default=_GROUP.recovery_method.value,
        description="where evacuations go: auto (Nova's scheduler), reserved_host (only "
        "the reserved hosts), auto_priority (the scheduler, then the reserved hosts), "
        "rh_priority (the reserved hosts, then the scheduler)",
    )
    reserved_hosts: list[str] = Field(
        default_factory=list, description="the hosts the reserved_host methods try, in order"
    )
    evacuate_all: bool = Field(
        default=_GROUP.evacuate_all, description="also servers without HA_Enabled=True"
    )
    ignore_error_servers: bool = Field(
        default=_GROUP.ignore_error_servers,
        description="do not evacuate servers already in error before the fault",
    )
    on_shared_storage: bool = Field(
        default=_GROUP.on_shared_storage,
        description="Nova's onSharedStorage for evacuations (sent only below microversion 2.14)",
    )
    concurrency: int = Field(
        default=_GROUP.concurrency, ge=1, le=64, description="evacuations at once"
    )
    auto_release: bool = Field(
        default=_GROUP.auto_release,
        description="put a fenced host that came back into service without an operator "
        "(tried every 5 s, for up to 10 minutes, until Nova accepts)",
    )
    maintenance_migrate_all: bool = Field(
        default=_GROUP.maintenance_migrate_all,
        description="planned maintenance: also live-migrate servers without HA_Enabled=True "
        "(false: they are left on the host)",
    )


class RecoveryConfig(_Section):
    """Fencing and evacuation, as durable workflows."""

    enabled: bool = Field(
        default=True, description="false: correct state and alert, never fence or evacuate"
    )
    database_url: str | None = Field(
        default=None,
        description="the workflows' database; default: <storage file>-workflows.db "
        "beside a SQLite store, or the storage database itself on PostgreSQL",
    )
    check_interval: float = Field(
        default=0.5, gt=0, description="fencing: seconds between power reads"
    )
    check_max_count: int = Field(
        default=20, ge=1, description="fencing: power reads before FENCING_FAILED"
    )
    evacuate_timeout: float = Field(
        default=120.0,
        gt=0,
        description="one server: from its evacuation request to running elsewhere (s)",
    )
    evacuate_attempts: int = Field(default=2, ge=1, le=10, description="tries per destination")
    restart_compute: bool = Field(
        default=False,
        description="on COMPUTE_PROCESS_DOWN, have the host's agent restart nova-compute "
        "(the agent must be started with --restart-compute-command)",
    )
    compute_restart_attempts: int = Field(
        default=3, ge=1, le=10, description="nova-compute restarts asked of the agent"
    )
    compute_restart_wait: float = Field(
        default=30.0, gt=0, description="per attempt: until the agent says it runs (s)"
    )
    maintenance_migrate_timeout: float = Field(
        default=300.0,
        gt=0,
        description="planned maintenance: one server, from its live migration request to "
        "running on another host (s)",
    )
    maintenance_migrate_attempts: int = Field(
        default=2, ge=1, le=10, description="planned maintenance: live migrations tried per server"
    )
    groups: list[HostGroupConfig] = Field(
        default_factory=list,
        description="host groups, one table each; none: one default group of every host",
    )

    def workflows_url(self, storage_url: str) -> str:
        if self.database_url:
            return self.database_url
        if storage_url.startswith("sqlite:///"):
            path = storage_url.removeprefix("sqlite:///")
            stem = path[:-3] if path.endswith(".db") else path
            return f"sqlite:///{stem}-workflows.db"
        return storage_url


class ProfilerConfig(_Section):
    """Each fault's profile as OpenTelemetry spans, exported once the fault is over."""

    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="none; console (the spans as JSON on stdout); otlp (OTLP over HTTP)",
    )
    otel_endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces", description="the OTLP/HTTP traces URL"
    )
    otel_service_name: str = Field(
        default="medevac", min_length=1, description="the spans' service.name"
    )


LOOPBACK: tuple[IPv4Network | IPv6Network, ...] = (
    IPv4Network("127.0.0.0/8"),
    IPv6Network("::1/128"),
)


class MetricsConfig(_Section):
    """The Prometheus metrics (docs/metrics.md): always on the API (GET /metrics, an
    admin or reader token); with a listen address, also on a listener of their own,
    without a token, for scrapers on the networks named."""

    listen: str | None = Field(
        default=None,
        description="host:port (an IPv6 host in brackets) of a listener serving only GET "
        "/metrics, without a token, over plain HTTP, e.g. 127.0.0.1:9781; none: the "
        "metrics are served by the API only",
    )
    scraper_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(LOOPBACK),
        description="networks (CIDRs) the listener answers, judged on the TCP peer's "
        "address; any other peer gets 403 (loopback by default)",
    )

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    def address(self) -> tuple[str, int] | None:
        """The listener's (host, port), or None when it is off."""
        return split_listen(self.listen) if self.listen else None


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as (host, port); ValueError if it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9781)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: an IPv6 address goes in brackets, [::1]:9781")
    return host, int(port)


class BmcCredentials(_Section):
    """One host's BMC login, in the file bmc_secrets_file names (a table per host)."""

    username: str = Field(description="the BMC user")
    password: SecretStr = Field(description="its password; a secret, never logged")


class Settings(BaseSettings):
    """The whole controller configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MEDEVAC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    api: ApiConfig = Field(default_factory=ApiConfig)
    keystone: KeystoneConfig = Field(default_factory=KeystoneConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    inspector: InspectorConfig = Field(default_factory=InspectorConfig)
    notifier: NotifierConfig = Field(default_factory=NotifierConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    profiler: ProfilerConfig = Field(default_factory=ProfilerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    hosts: dict[Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)], HostConfig] = Field(
        default_factory=dict
    )
    bmc_secrets_file: Path | None = Field(
        default=None,
        description="TOML file of [host] username/password tables, kept apart from this file",
    )
    agent_key_file: Path | None = Field(
        default=None,
        description="file holding the master key; each host's agent signs with its own key, "
        "derived from it ('medevac agent-key HOST' writes that host's key file)",
    )

    @model_validator(mode="after")
    def _several_controllers(self) -> Settings:
        c = self.cluster
        if not c.enabled:
            return self
        if self.storage.url.startswith("sqlite"):
            raise ValueError(
                "cluster.coordination_url is set but storage.url is SQLite: several "
                "controllers share one store, e.g. postgresql+psycopg://user@host/medevac"
            )
        peer = c.peer_token.get_secret_value() if c.peer_token is not None else None
        roles = {t.token.get_secret_value(): t.role for t in self.api.tokens}
        if peer is None or roles.get(peer) not in (Role.ADMIN, Role.READER):
            raise ValueError(
                "cluster.peer_token must be set to one of api.tokens with the reader or "
                "admin role: controllers ask each other whether a host is silent with it"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    def agent_key(self) -> bytes:
        """The master key each host's heartbeat key is derived from (ConfigError when
        unset or unreadable)."""
        if self.agent_key_file is None:
            raise ConfigError("agent_key_file is not set: heartbeats cannot be verified")
        try:
            key = self.agent_key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{self.agent_key_file}: {exc.strerror}") from None
        if len(key) < 16:
            raise ConfigError(f"{self.agent_key_file}: the key must be at least 16 bytes")
        return key

    def bmc_credentials(self) -> dict[str, BmcCredentials]:
        """Per-host BMC credentials from the secrets file (empty when none is set)."""
        if self.bmc_secrets_file is None:
            return {}
        raw = _read_toml(self.bmc_secrets_file)
        creds: dict[str, BmcCredentials] = {}
        for host, entry in raw.items():
            try:
                creds[host] = BmcCredentials.model_validate(entry)
            except ValidationError as exc:
                raise ConfigError(
                    _describe(exc, f"{self.bmc_secrets_file} [{host}]", with_input=False)
                ) from None
        return creds


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _describe(exc: ValidationError, where: str, *, with_input: bool = True) -> str:
    lines = [f"invalid configuration in {where}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        # Inputs of secret fields must not be echoed back.
        secret = any(str(p) in {"token", "password"} for p in err["loc"])
        scalar = isinstance(err.get("input"), str | int | float | bool)
        if with_input and scalar and not secret and err["type"] != "missing":
            msg += f" (got {err['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_settings(path: Path | str | None = None) -> Settings:
    """Load and validate the configuration; raise ConfigError with a readable message."""
    chosen = Path(path) if path else None
    if chosen is None and os.environ.get(CONFIG_ENV):
        chosen = Path(os.environ[CONFIG_ENV])
    where = str(chosen) if chosen else "environment"
    cls: type[Settings] = Settings
    if chosen is not None:
        _read_toml(chosen)  # surfaces missing/unreadable/invalid TOML with its own message

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=chosen)

        cls = _FromFile
    try:
        return cls()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None

"""Controller configuration: one TOML file plus ``MEDEVAC_*`` environment overrides.

The file is named by ``--config`` or ``MEDEVAC_CONFIG``. Nested keys are overridden
from the environment with ``__`` between levels (``MEDEVAC_API__PORT=9000``).
OpenStack credentials never live here: ``cloud.name`` picks an entry of clouds.yaml.
Secrets (API tokens, BMC passwords) are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import enum
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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

    name: str = Field(min_length=1, description="who holds it; shown in the audit log")
    token: SecretStr
    role: Role
    project_id: str | None = Field(default=None, description="required for role member")

    @model_validator(mode="after")
    def _member_needs_project(self) -> ApiToken:
        if self.role is Role.MEMBER and not self.project_id:
            raise ValueError(f"token {self.name!r}: role 'member' needs a project_id")
        if len(self.token.get_secret_value()) < 16:
            raise ValueError(f"token {self.name!r}: must be at least 16 characters")
        return self


class ApiConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    tokens: list[ApiToken] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tokens_unique(self) -> ApiConfig:
        seen: set[str] = set()
        for t in self.tokens:
            value = t.token.get_secret_value()
            if value in seen:
                raise ValueError(f"token {t.name!r}: the same token value is configured twice")
            seen.add(value)
        return self


class CloudConfig(_Section):
    name: str = Field(default="openstack", description="entry of clouds.yaml")
    clouds_yaml: Path | None = Field(
        default=None, description="clouds.yaml to read; default: openstacksdk's search path"
    )
    max_workers: int = Field(default=16, ge=1, le=256, description="threads for SDK calls")
    call_timeout: float = Field(default=30.0, gt=0)
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
    url: str = Field(
        default="sqlite:///medevac.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://...",
    )
    checkpoint_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="SQLite: copy the write-ahead log into the file this often (s)",
    )


class BmcDriver(enum.StrEnum):
    IPMI = "ipmi"
    REDFISH = "redfish"


class HostConfig(_Section):
    """A compute host medevac watches: where its BMC answers."""

    bmc_driver: BmcDriver = BmcDriver.IPMI
    bmc_address: str
    bmc_port: int | None = Field(
        default=None, ge=1, le=65535, description="default: 623 for IPMI, 443 for Redfish"
    )
    zone: str = "nova"
    redfish_scheme: Literal["https", "http"] = "https"
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

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8781, ge=0, le=65535, description="UDP, for agents")
    interval: float = Field(default=0.1, gt=0, description="the agents' heartbeat interval (s)")
    phi_threshold: float = Field(
        default=8.0,
        gt=0,
        description="suspect a host when phi reaches this (8: one chance in 10^8 of a "
        "live host being that late); lower detects faster, higher suspects less",
    )
    max_clock_skew: float = Field(default=5.0, gt=0, description="drop datagrams off by more")
    probes: int = Field(default=3, ge=1, le=10, description="direct probes before a verdict")
    probe_timeout: float = Field(default=0.04, gt=0, description="wait for a probe answer (s)")
    bmc_refresh: float = Field(
        default=10.0, ge=0, description="read each BMC this often anyway (s); 0: only on suspicion"
    )
    bmc_timeout: float = Field(
        default=1.0, gt=0, description="one BMC call, read or power off, login included (s)"
    )
    bmc_verdict_wait: float = Field(
        default=0.06,
        gt=0,
        description="how long a verdict waits for the BMC (s); past it the verdict is "
        "HOST_UNREACHABLE and a later 'power off' upgrades it to HOST_DOWN",
    )
    isolation_fraction: float = Field(default=0.5, gt=0, le=1)
    isolation_window: float = Field(default=2.0, gt=0)
    isolation_min_hosts: int = Field(default=3, ge=2)
    nova_notifications_url: str | None = Field(
        default=None,
        description="RabbitMQ URL (rabbit:// or amqp://) of Nova's versioned notifications",
    )
    alertmanager_host_label: str = Field(
        default="instance", description="alert label naming the host (a :port is stripped)"
    )


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
        default=60.0, gt=0, description="full topology resync period (s); notifications between"
    )
    notify_head_start: float = Field(
        default=0.05,
        ge=0,
        description="cloud calls wait for the alarms to be out, at most this long (s)",
    )
    action_concurrency: int = Field(default=32, ge=1, le=512, description="cloud calls at once")
    action_attempts: int = Field(default=4, ge=1, le=20, description="tries per action")
    action_backoff: float = Field(default=0.2, gt=0, description="first retry wait (s), doubling")
    guard_fraction: float = Field(
        default=0.5, gt=0, le=1, description="share of a zone lost within the window that holds it"
    )
    guard_window: float = Field(default=60.0, gt=0, description="guard window (s)")
    guard_min_hosts: int = Field(default=3, ge=1, description="never hold for fewer hosts")
    guard_hold: float = Field(
        default=300.0, gt=0, description="a hold lasts this after its trigger (s)"
    )


class SnmpManagerConfig(_Section):
    """An SNMP manager that receives a v2c trap per event."""

    host: str
    port: int = Field(default=162, ge=1, le=65535)
    community: SecretStr
    event_types: list[str] = Field(
        default_factory=lambda: ["compute.host.*", "medevac.*"],
        min_length=1,
        description="shell wildcards of the event types sent (default: host-level events)",
    )


class NotifierConfig(_Section):
    """Webhook delivery of alarms, and SNMP traps."""

    delivery_timeout: float = Field(default=5.0, gt=0, description="one POST (s)")
    retry_initial: float = Field(default=0.5, gt=0, description="first retry wait (s), doubling")
    retry_max_interval: float = Field(
        default=10.0, gt=0, description="longest wait between retries (s)"
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
    snmp_oid_base: str = Field(
        default="1.3.6.1.3.7446",
        pattern=r"^\d+(\.\d+)+$",
        description="OID arc of medevac's traps; put it under your enterprise number",
    )
    snmp_managers: list[SnmpManagerConfig] = Field(default_factory=list)
    bus_url: str | None = Field(
        default=None,
        description="RabbitMQ URL: publish every event as an oslo.messaging notification",
    )
    bus_exchange: str = Field(default="medevac", min_length=1)
    bus_topic: str = Field(default="notifications", min_length=1)


class HostGroupConfig(_Section):
    """A group of hosts recovered under one policy (a Masakari segment)."""

    name: str = Field(min_length=1)
    hosts: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="wildcards")
    level: Literal[1, 2, 3] = Field(
        default=2,
        description="1: force down, no fencing (unsafe); 2: fence first; 3: wait for Nova",
    )
    recovery_method: Literal["auto", "reserved_host", "auto_priority", "rh_priority"] = "auto"
    reserved_hosts: list[str] = Field(default_factory=list)
    evacuate_all: bool = Field(default=False, description="also servers without HA_Enabled")
    ignore_error_servers: bool = False
    on_shared_storage: bool = False
    concurrency: int = Field(default=4, ge=1, le=64, description="evacuations at once")
    auto_release: bool = False


class RecoveryConfig(_Section):
    """Fencing and evacuation, as durable workflows."""

    enabled: bool = Field(default=True, description="false: correct state and alert only")
    database_url: str | None = Field(
        default=None,
        description="the workflows' database; default: <storage file>-workflows.db "
        "beside a SQLite store, or the storage database itself on PostgreSQL",
    )
    check_interval: float = Field(default=0.5, gt=0, description="fencing: between reads (s)")
    check_max_count: int = Field(default=20, ge=1, description="fencing: reads before giving up")
    evacuate_timeout: float = Field(default=120.0, gt=0, description="one server (s)")
    evacuate_attempts: int = Field(default=2, ge=1, le=10, description="per destination")
    restart_compute: bool = Field(
        default=False,
        description="on COMPUTE_PROCESS_DOWN, have the host's agent restart nova-compute "
        "(the agent must be started with --restart-compute-command)",
    )
    compute_restart_attempts: int = Field(default=3, ge=1, le=10)
    compute_restart_wait: float = Field(
        default=30.0, gt=0, description="per attempt: until the agent says it runs (s)"
    )
    groups: list[HostGroupConfig] = Field(default_factory=list)

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
    otel_service_name: str = Field(default="medevac", min_length=1)


class BmcCredentials(_Section):
    username: str
    password: SecretStr


class Settings(BaseSettings):
    """The whole controller configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MEDEVAC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    api: ApiConfig = Field(default_factory=ApiConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    inspector: InspectorConfig = Field(default_factory=InspectorConfig)
    notifier: NotifierConfig = Field(default_factory=NotifierConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    profiler: ProfilerConfig = Field(default_factory=ProfilerConfig)
    hosts: dict[str, HostConfig] = Field(default_factory=dict)
    bmc_secrets_file: Path | None = Field(
        default=None,
        description="TOML file of [host] username/password tables, kept apart from this file",
    )
    agent_key_file: Path | None = Field(
        default=None, description="file holding the cluster key that signs agent heartbeats"
    )

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
        """The cluster key that signs heartbeats (ConfigError when unset or unreadable)."""
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

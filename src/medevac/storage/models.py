"""Tables. Every schema change goes through a migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The lengths of the string columns that outside input reaches (API bodies, the
# configuration). PostgreSQL refuses a longer value, failing the whole write (SQLite
# keeps anything): the API and the configuration refuse it first, against these.
NAME_LENGTH = 255  # host and server names, project ids, audit subjects and actors
URL_LENGTH = 2000  # an alarm action's URL, one delivery each
TEXT_LENGTH = 1000  # reasons and errors


class Base(DeclarativeBase):
    pass


class HostRecord(Base):
    """The persisted lifecycle state of one compute host (UP, SUSPECT, DOWN, FENCED, ...)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    zone: Mapped[str] = mapped_column(String(NAME_LENGTH), default="nova")
    state: Mapped[str] = mapped_column(String(32), default="UP")
    state_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Optimistic concurrency: a transition names the generation it started from.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # The controller that owns the host, and the epoch of its ownership: it rises at
    # every change of owner, and an effect on the host is recorded only by the
    # controller holding the current epoch (a fencing token).
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)


class AuditEvent(Base):
    """An append-only record of something medevac saw or did, with the fault's trace."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_subject_at", "subject", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(NAME_LENGTH))
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IncidentRecord(Base):
    """One host's incident: every verdict about it merged, with actions and events."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    zone: Mapped[str] = mapped_column(String(NAME_LENGTH))
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    # The host's name while the incident is open, NULL once closed: the unique index
    # makes a second open incident for one host impossible, whoever writes.
    open_host: Mapped[str | None] = mapped_column(String(NAME_LENGTH), unique=True, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    trace_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AlarmRecord(Base):
    """An Aodh-style event alarm."""

    __tablename__ = "alarms"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH), index=True, nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    state_reason: Mapped[str] = mapped_column(String(TEXT_LENGTH), default="")
    state_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class AlarmChange(Base):
    """An alarm's history: creation, rule change, state transition, deletion."""

    __tablename__ = "alarm_history"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    alarm_id: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    type: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Delivery(Base):
    """One alarm notification to one consumer URL: the durable outbox."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # stable: consumers dedup
    alarm_id: Mapped[str] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(TEXT_LENGTH), nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The controller that sends it (several controllers): one at a time, and a dead
    # one's pending deliveries are adopted by one survivor each.
    owner: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)


class RecoveryRecord(Base):
    """One host recovery (a durable workflow) and where it stands."""

    __tablename__ = "recoveries"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the workflow id
    incident_id: Mapped[str] = mapped_column(String(36), index=True)
    host: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    level: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class EvacuationRecord(Base):
    """The evacuation history: one row per server per recovery."""

    __tablename__ = "evacuations"
    __table_args__ = (
        UniqueConstraint("recovery_id", "server_id", name="uq_evacuation_per_recovery"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    recovery_id: Mapped[str] = mapped_column(String(128), index=True)
    server_id: Mapped[str] = mapped_column(String(36), index=True)
    server_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    from_host: Mapped[str] = mapped_column(String(NAME_LENGTH))
    to_host: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[str] = mapped_column(String(32))  # running | recovered | already-moved | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- Masakari's API v1: segments, their hosts, notifications ----------------------------
# Integer ids, because Masakari's paging markers are ids; uuids, because its paths are.


def _serial() -> Any:
    return BigInteger().with_variant(Integer, "sqlite")


class SegmentRecord(Base):
    """A Masakari failover segment: a host group, editable at run time."""

    __tablename__ = "masakari_segments"

    id: Mapped[int] = mapped_column(_serial(), primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    description: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    recovery_method: Mapped[str] = mapped_column(String(32))
    service_type: Mapped[str] = mapped_column(String(NAME_LENGTH))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SegmentHostRecord(Base):
    """A host of a segment; a host name belongs to one segment at most."""

    __tablename__ = "masakari_hosts"

    id: Mapped[int] = mapped_column(_serial(), primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    segment_uuid: Mapped[str] = mapped_column(String(36), index=True)
    type: Mapped[str] = mapped_column(String(NAME_LENGTH))
    control_attributes: Mapped[str] = mapped_column(String(TEXT_LENGTH))
    reserved: Mapped[bool] = mapped_column(Boolean, default=False)
    on_maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NotificationRecord(Base):
    """A Masakari notification as received, with what the monitor made of it; its
    status and progress are derived from the incident and recoveries it led to."""

    __tablename__ = "masakari_notifications"
    __table_args__ = (
        Index("ix_masakari_notifications_host_type_time", "hostname", "type", "generated_time"),
    )

    id: Mapped[int] = mapped_column(_serial(), primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str] = mapped_column(String(NAME_LENGTH))
    source_host_uuid: Mapped[str] = mapped_column(String(36), index=True)
    segment_uuid: Mapped[str] = mapped_column(String(36), index=True)
    generated_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # accepted (acted on: a suspicion, or a fault its host's agent reports too) | ignored
    outcome: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(String(TEXT_LENGTH), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MaintenanceRecord(Base):
    """One planned maintenance of a host: why, until when owners may answer, its state."""

    __tablename__ = "maintenances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    # The host's name while the maintenance is open, NULL once ended: one open
    # maintenance per host, whoever writes.
    open_host: Mapped[str | None] = mapped_column(String(NAME_LENGTH), unique=True, nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(TEXT_LENGTH))
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MaintenanceServerRecord(Base):
    """One server of a host under maintenance: its owner's answer, what was done to it."""

    __tablename__ = "maintenance_servers"
    __table_args__ = (
        UniqueConstraint("maintenance_id", "server_id", name="uq_server_per_maintenance"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    maintenance_id: Mapped[str] = mapped_column(String(36), index=True)
    server_id: Mapped[str] = mapped_column(String(36), index=True)
    server_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    project_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    ha: Mapped[bool] = mapped_column(Boolean, default=False)
    answer: Mapped[str | None] = mapped_column(String(16), nullable=True)  # ack | leave
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    # pending | queued | left | migrating | migrated | already-moved | failed | interrupted
    result: Mapped[str] = mapped_column(String(32), default="pending")
    to_host: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

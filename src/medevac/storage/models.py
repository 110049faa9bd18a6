"""Tables. Every schema change goes through a migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class HostRecord(Base):
    """The persisted lifecycle state of one compute host (UP, SUSPECT, DOWN, FENCED, ...)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    zone: Mapped[str] = mapped_column(String(255), default="nova")
    state: Mapped[str] = mapped_column(String(32), default="UP")
    state_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Optimistic concurrency: a transition names the generation it started from.
    generation: Mapped[int] = mapped_column(Integer, default=0)


class AuditEvent(Base):
    """An append-only record of something medevac saw or did, with the fault's trace."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_subject_at", "subject", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    trace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

"""Verdicts: the monitor's conclusions, each with its evidence and timestamps."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


class VerdictKind(enum.StrEnum):
    HOST_DOWN = "HOST_DOWN"  # silent, and the BMC confirms power off
    HOST_UNREACHABLE = "HOST_UNREACHABLE"  # silent, power on or BMC unknown: needs fencing
    COMPUTE_PROCESS_DOWN = "COMPUTE_PROCESS_DOWN"  # agent alive, nova-compute dead
    COMPUTE_PROCESS_UP = "COMPUTE_PROCESS_UP"
    SERVER_DOWN = "SERVER_DOWN"  # one server's domain died
    SERVER_UP = "SERVER_UP"  # the agent no longer reports it dead
    LINK_DOWN = "LINK_DOWN"  # (host, physnet)
    LINK_UP = "LINK_UP"
    HOST_UP = "HOST_UP"  # heartbeats are back after a host verdict
    OBSERVER_ISOLATED = "OBSERVER_ISOLATED"  # most of a zone went silent at once: suspect us

    @property
    def host_lost(self) -> bool:
        return self in (VerdictKind.HOST_DOWN, VerdictKind.HOST_UNREACHABLE)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    host: str  # for OBSERVER_ISOLATED: the zone
    at: float  # wall clock of the verdict
    evidence: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None  # server id for SERVER_DOWN, physnet for LINK_*
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "host": self.host,
            "subject": self.subject,
            "at": self.at,
            "evidence": self.evidence,
            "trace_id": self.trace_id,
        }


class VerdictSink(Protocol):
    def on_verdict(self, verdict: Verdict) -> None:
        """Take a verdict; must not block (the inspector queues its work)."""
        ...

"""Incidents: every verdict about one host merged into one record with a state machine.

Pure data and transitions; the store persists them and the inspector drives them.

States::

    OPEN ──► CORRECTING ──► CORRECTED        (every state action succeeded; back to OPEN
                                              when the inspector only observes)
      │            └──────► PARTIAL          (some action failed: an event says which)
      └──► HELD                              (mass-failure guard: no action in the zone)
    any ──► CLOSED                           (every fault of the incident healed)

An incident tracks its open faults: ("host", ""), ("link", physnet), ("process", ""),
("server", id). A recovery verdict removes one; when none is left the incident closes.
Issue-level recovery (fencing, evacuation) extends the machine from CORRECTED/PARTIAL.

An incident whose host was recovered follows the cloud: it closes when Nova shows the
host put back in service (an operator's ``openstack compute service set --enable
--up``), and a host that fails again once its recovery has ended gets a new incident,
so a new recovery; never nothing.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from medevac.inspector.lifecycle import HostState
from medevac.monitor.verdicts import Verdict, VerdictKind


class IncidentState(enum.StrEnum):
    OPEN = "OPEN"
    CORRECTING = "CORRECTING"
    CORRECTED = "CORRECTED"
    PARTIAL = "PARTIAL"
    HELD = "HELD"
    CLOSED = "CLOSED"


ALLOWED: dict[IncidentState, frozenset[IncidentState]] = {
    IncidentState.OPEN: frozenset(
        {IncidentState.CORRECTING, IncidentState.HELD, IncidentState.CLOSED}
    ),
    IncidentState.CORRECTING: frozenset(
        {IncidentState.CORRECTED, IncidentState.PARTIAL, IncidentState.CLOSED, IncidentState.OPEN}
    ),
    IncidentState.CORRECTED: frozenset({IncidentState.CORRECTING, IncidentState.CLOSED}),
    IncidentState.PARTIAL: frozenset({IncidentState.CORRECTING, IncidentState.CLOSED}),
    IncidentState.HELD: frozenset({IncidentState.CORRECTING, IncidentState.CLOSED}),
    IncidentState.CLOSED: frozenset(),
}


class IllegalTransition(Exception):
    pass


# What each verdict opens or heals, as a fault key.
OPENS: dict[VerdictKind, str] = {
    VerdictKind.HOST_DOWN: "host",
    VerdictKind.HOST_UNREACHABLE: "host",
    VerdictKind.LINK_DOWN: "link",
    VerdictKind.COMPUTE_PROCESS_DOWN: "process",
    VerdictKind.SERVER_DOWN: "server",
}
HEALS: dict[VerdictKind, str] = {
    VerdictKind.HOST_UP: "host",
    VerdictKind.LINK_UP: "link",
    VerdictKind.COMPUTE_PROCESS_UP: "process",
    VerdictKind.SERVER_UP: "server",
}
# An incident's kind is its most serious fault.
SEVERITY = ("server", "process", "link", "host")


def fault_key(verdict: Verdict) -> str | None:
    kind = OPENS.get(verdict.kind) or HEALS.get(verdict.kind)
    if kind is None:
        return None
    subject = (verdict.subject or "") if kind in ("link", "server") else ""
    return f"{kind}:{subject}"


@dataclass
class Incident:
    host: str
    zone: str
    opened_at: float
    trace_id: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: IncidentState = IncidentState.OPEN
    faults: dict[str, float] = field(default_factory=dict)  # fault key -> since
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # Ports this incident set DOWN, with the status to restore (None: was unset).
    ports_down: dict[str, str | None] = field(default_factory=dict)
    updated_at: float = 0.0
    closed_at: float | None = None
    held_reason: str | None = None
    recovery_id: str | None = None
    # Its host's lifecycle is AWAITING_RELEASE (back, kept down until released): a copy
    # the inspector keeps for the incident's readers; decisions read the lifecycle.
    awaiting_release: bool = False
    recovery_ended_at: float | None = None  # when the host's recovery ended, any outcome
    closed_by: str | None = None  # why it closed: healed, released by whom, superseded
    stamps: dict[str, float] = field(default_factory=dict)  # profiler checkpoints

    @property
    def kind(self) -> str:
        kinds = {k.split(":", 1)[0] for k in self.faults} or {"host"}
        return max(kinds, key=SEVERITY.index)

    @property
    def host_lost(self) -> bool:
        return "host:" in self.faults

    @property
    def is_open(self) -> bool:
        return self.state is not IncidentState.CLOSED

    def move(self, to: IncidentState, at: float) -> None:
        if to is self.state:
            return
        if to not in ALLOWED[self.state]:
            raise IllegalTransition(f"incident {self.id}: {self.state} -> {to}")
        self.state = to
        self.updated_at = at
        if to is IncidentState.CLOSED:
            self.closed_at = at

    def add_verdict(self, verdict: Verdict) -> tuple[bool, bool]:
        """Record a verdict; returns (opened a new fault, healed the last fault)."""
        self.verdicts.append(verdict.as_dict())
        self.updated_at = verdict.at
        key = fault_key(verdict)
        if key is None:
            return False, False
        if verdict.kind in OPENS:
            if key in self.faults:
                return False, False
            self.faults[key] = verdict.at
            return True, False
        if key not in self.faults:
            return False, False
        del self.faults[key]
        return False, not self.faults

    def stamp(self, checkpoint: str, at: float) -> None:
        self.stamps.setdefault(checkpoint, at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "zone": self.zone,
            "kind": self.kind,
            "state": self.state.value,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "closed_at": self.closed_at,
            "trace_id": self.trace_id,
            "faults": dict(self.faults),
            "held_reason": self.held_reason,
            "recovery_id": self.recovery_id,
            "awaiting_release": self.awaiting_release,
            "recovery_ended_at": self.recovery_ended_at,
            "closed_by": self.closed_by,
            "verdicts": list(self.verdicts),
            "actions": list(self.actions),
            "events": list(self.events),
            "ports_down": dict(self.ports_down),
            "stamps": dict(self.stamps),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        return cls(
            host=d["host"],
            zone=d["zone"],
            opened_at=d["opened_at"],
            trace_id=d["trace_id"],
            id=d["id"],
            state=IncidentState(d["state"]),
            faults=dict(d.get("faults", {})),
            verdicts=list(d.get("verdicts", [])),
            actions=list(d.get("actions", [])),
            events=list(d.get("events", [])),
            ports_down=dict(d.get("ports_down", {})),
            updated_at=d.get("updated_at", d["opened_at"]),
            closed_at=d.get("closed_at"),
            held_reason=d.get("held_reason"),
            recovery_id=d.get("recovery_id"),
            awaiting_release=bool(d.get("awaiting_release", False)),
            recovery_ended_at=d.get("recovery_ended_at"),
            closed_by=d.get("closed_by"),
            stamps=dict(d.get("stamps", {})),
        )


@dataclass(frozen=True, slots=True)
class ServiceView:
    """Nova's compute service of one host, as it stood at ``as_of`` (wall clock: when
    the listing was asked for, or when Nova sent the notification)."""

    enabled: bool
    forced_down: bool
    as_of: float

    @classmethod
    def of(cls, view: dict[str, Any], as_of: float) -> ServiceView:
        """From the monitor's view of a service (``status``, ``forced_down``)."""
        return cls(view.get("status") == "enabled", bool(view.get("forced_down")), as_of)


def released_in_cloud(inc: Incident, host_state: HostState, view: ServiceView | None) -> str | None:
    """What shows that ``inc``'s host (now in ``host_state``) was put back in service
    outside medevac, or None.

    Only a host that is back (awaiting release) after a recovery that has ended, and
    only a view taken after that end: the recovery itself leaves the service forced
    down and disabled, so an older view that shows it up says nothing of a release.
    """
    back = host_state is HostState.AWAITING_RELEASE
    if view is None or not back or inc.recovery_ended_at is None:
        return None
    if view.as_of <= inc.recovery_ended_at or not view.enabled or view.forced_down:
        return None
    return "nova-compute enabled and not forced down"


def fails_again(inc: Incident, verdict: Verdict) -> bool:
    """A loss verdict about a host whose recovery has ended and that was heard from
    since: the host failed anew, and needs an incident (and a recovery) of its own."""
    return verdict.kind.host_lost and inc.recovery_ended_at is not None and not inc.host_lost

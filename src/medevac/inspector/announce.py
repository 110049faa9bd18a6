"""What the inspector tells the consumers, as events: pure builders over an incident,
the topology's view of its resources, and the time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import medevac.notifier.events as ev
from medevac.cloud.models import DataPlaneStatus
from medevac.inspector.actions import Action, ActionKind, resettable
from medevac.inspector.executor import ActionResult
from medevac.inspector.incidents import Incident
from medevac.inspector.topology import PortInfo, ServerInfo
from medevac.monitor.verdicts import Verdict
from medevac.notifier.events import Event


def host_event(event_type: str, inc: Incident, verdict: Verdict | None, at: float) -> Event:
    traits: dict[str, Any] = {"host": inc.host, "zone": inc.zone, "incident_id": inc.id}
    if verdict is not None:
        traits["verdict"] = verdict.kind.value
    return Event(event_type, at, traits, trace_id=inc.trace_id)


def server_events(
    inc: Incident, servers: Iterable[ServerInfo], at: float, *, reset_to_error: bool
) -> Iterator[Event]:
    """The lost host's servers, built as they are consumed; ``reset_to_error``: the
    inspector resets them (their state then says error, as it soon is)."""
    return (
        Event(
            ev.INSTANCE_UPDATE,
            at,
            {
                "instance_id": s.id,
                "project_id": s.project_id,
                "tenant_id": s.project_id,
                "host": inc.host,
                "state": "error" if reset_to_error and resettable(s) else (s.vm_state or "unknown"),
                "host_status": "DOWN",
            },
            trace_id=inc.trace_id,
        )
        for s in servers
    )


def server_down_event(inc: Incident, server_id: str, server: ServerInfo | None, at: float) -> Event:
    """One server whose domain died on a live host."""
    traits: dict[str, Any] = {
        "instance_id": server_id,
        "host": inc.host,
        "state": server.vm_state if server and server.vm_state else "unknown",
        "power_state": "crashed",
        "host_status": "UP",
    }
    if server is not None:
        traits["project_id"] = server.project_id
    return Event(ev.INSTANCE_UPDATE, at, traits, trace_id=inc.trace_id)


def port_events(
    inc: Incident, ports: Iterable[PortInfo], status: DataPlaneStatus, at: float
) -> list[Event]:
    """The ports whose data plane changes to ``status`` (those already there: none)."""
    return [
        Event(
            ev.PORT_STATUS,
            at,
            {
                "port_id": p.id,
                "project_id": p.project_id,
                "device_id": p.device_id,
                "host": inc.host,
                "physnet": p.physnet or "",
                "data_plane_status": status.value,
            },
            trace_id=inc.trace_id,
        )
        for p in ports
        if p.data_plane_status is not status
    ]


def guard_event(zone: str, reason: str, trace_id: str, at: float) -> Event:
    traits = {"zone": zone, "reason": reason}
    return Event(ev.GUARD_HOLD, at, traits, trace_id=trace_id, severity="critical")


def action_failed_event(inc: Incident, result: ActionResult, at: float) -> Event:
    """A state action that failed for good: the claim made in advance is not true."""
    a: Action = result.action
    traits: dict[str, Any] = {
        "action": a.kind.value,
        "target": a.target,
        "value": a.value,
        "host": inc.host,
        "error": result.error or "",
        "attempts": result.attempts,
    }
    if a.project_id:
        traits["project_id"] = a.project_id
    if a.kind is ActionKind.RESET_STATE:
        traits["instance_id"] = a.target
    elif a.kind is ActionKind.PORT_STATUS:
        traits["port_id"] = a.target
    return Event(ev.ACTION_FAILED, at, traits, trace_id=inc.trace_id, severity="critical")

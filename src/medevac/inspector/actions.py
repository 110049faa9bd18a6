"""State actions: what must change in the cloud for a verdict, and nothing more.

Pure planning. A plan skips whatever is already in its target state (fewer calls is
the only way below the cloud's own API cost), and never touches servers Nova is done
with or that are already in error (seed 000).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from medevac.cloud.models import DataPlaneStatus
from medevac.inspector.topology import PortInfo, ServerInfo


class ActionKind(enum.StrEnum):
    FORCE_DOWN = "force-down"
    RESET_STATE = "reset-state"
    PORT_STATUS = "port-status"
    SERVICE_STATUS = "service-status"  # enable or disable the host's compute service


class ResetPolicy(enum.StrEnum):
    ERROR = "error"  # reset affected servers to error (Doctor's behaviour)
    NONE = "none"  # leave servers as they are; host_status still says DOWN


# vm_states a reset must not touch: gone, being resized, or already in error.
UNTOUCHABLE_VM_STATES = frozenset({"deleted", "soft-delete", "soft_deleted", "resized", "error"})


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    target: str  # host name, server id or port id
    value: str  # "true", "error", "DOWN", "ACTIVE"
    host: str
    project_id: str | None = None
    physnet: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.target}:{self.value}"


def resettable(server: ServerInfo) -> bool:
    return (server.vm_state or "") not in UNTOUCHABLE_VM_STATES


def plan_host_lost(
    host: str,
    servers: Iterable[ServerInfo],
    ports: Iterable[PortInfo],
    reset: ResetPolicy,
) -> list[Action]:
    """Force the service down, reset the servers, set the host's ports DOWN.

    Server by server, in the order given (each reset followed by its own ports): a
    server's evacuation waits only for the actions on it and its ports, so the
    first servers the recovery moves are the first ones settled."""
    plan = [Action(ActionKind.FORCE_DOWN, host, "true", host)]
    by_device: dict[str, list[PortInfo]] = {}
    for p in ports:
        by_device.setdefault(p.device_id, []).append(p)
    for s in servers:
        if reset is ResetPolicy.ERROR and resettable(s):
            plan.append(Action(ActionKind.RESET_STATE, s.id, "error", host, s.project_id))
        plan.extend(_ports_to(by_device.pop(s.id, ()), DataPlaneStatus.DOWN, host))
    for rest in by_device.values():  # ports of no server listed on the host
        plan.extend(_ports_to(rest, DataPlaneStatus.DOWN, host))
    return plan


PROCESS_DOWN_REASON = "medevac: nova-compute is not running"


def plan_process_down(host: str) -> list[Action]:
    """nova-compute died on a live host: take it out of scheduling, nothing more."""
    return [Action(ActionKind.SERVICE_STATUS, host, "disabled", host)]


def plan_process_up(host: str) -> list[Action]:
    return [Action(ActionKind.SERVICE_STATUS, host, "enabled", host)]


def plan_link_down(host: str, physnet: str, ports: Iterable[PortInfo]) -> list[Action]:
    """Only the host's ports on that physnet go DOWN; nothing else changes."""
    return _ports_to((p for p in ports if p.physnet == physnet), DataPlaneStatus.DOWN, host)


def plan_ports_restore(
    host: str, ports: Iterable[PortInfo], before: Mapping[str, str | None]
) -> list[Action]:
    """Ports this incident set DOWN go back to what they were (unset restores as ACTIVE:
    Neutron refuses to unset data_plane_status once set). Every one of them: what the
    cache says of a port we changed is older than our change."""
    out = []
    for p in ports:
        if p.id not in before:
            continue
        target = DataPlaneStatus(before[p.id] or DataPlaneStatus.ACTIVE)
        out.append(
            Action(ActionKind.PORT_STATUS, p.id, target.value, host, p.project_id, p.physnet)
        )
    return out


def _ports_to(ports: Iterable[PortInfo], status: DataPlaneStatus, host: str) -> list[Action]:
    return [
        Action(ActionKind.PORT_STATUS, p.id, status.value, host, p.project_id, p.physnet)
        for p in ports
        if p.data_plane_status is not status
    ]

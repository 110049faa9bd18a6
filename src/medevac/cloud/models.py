"""What the cloud driver returns: small immutable views of Nova and Neutron resources."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class DataPlaneStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    DOWN = "DOWN"


# Nova's power_state codes (nova/compute/power_state.py).
POWER_STATES = {
    0: "nostate",
    1: "running",
    3: "paused",
    4: "shutdown",
    6: "crashed",
    7: "suspended",
}


@dataclass(frozen=True, slots=True)
class ComputeService:
    id: str  # a UUID from microversion 2.53, an integer before
    host: str
    binary: str
    zone: str
    status: str  # enabled | disabled
    state: str  # up | down
    forced_down: bool
    updated_at: datetime | None
    disabled_reason: str | None

    @property
    def is_up(self) -> bool:
        return self.state == "up"


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    name: str
    project_id: str
    host: str | None
    status: str  # ACTIVE, ERROR, SHUTOFF, ...
    vm_state: str | None
    task_state: str | None
    power_state: int | None
    host_status: str | None  # UP | DOWN | MAINTENANCE | UNKNOWN | "" (2.16+, admin)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def power_state_name(self) -> str:
        return POWER_STATES.get(self.power_state or 0, str(self.power_state))

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> Server:
        return cls(
            id=body["id"],
            name=body.get("name", ""),
            project_id=body.get("tenant_id") or body.get("project_id", ""),
            host=body.get("OS-EXT-SRV-ATTR:host"),
            status=body.get("status", ""),
            vm_state=body.get("OS-EXT-STS:vm_state"),
            task_state=body.get("OS-EXT-STS:task_state"),
            power_state=body.get("OS-EXT-STS:power_state"),
            host_status=body.get("host_status"),
            metadata=dict(body.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    name: str
    project_id: str
    network_id: str
    device_id: str
    host: str | None
    status: str
    data_plane_status: DataPlaneStatus | None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> Port:
        dps = body.get("data_plane_status")
        return cls(
            id=body["id"],
            name=body.get("name", ""),
            project_id=body.get("project_id") or body.get("tenant_id", ""),
            network_id=body.get("network_id", ""),
            device_id=body.get("device_id", ""),
            host=body.get("binding:host_id") or None,
            status=body.get("status", ""),
            data_plane_status=DataPlaneStatus(dps) if dps else None,
        )

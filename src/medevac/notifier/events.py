"""Events: what the inspector tells the world, shaped as Ceilometer/Aodh events.

An event has a type (``compute.instance.update``), a time, and traits; each trait is
``[name, dtype, value]`` with Aodh's dtypes. Alarms match events on their type and
traits, and Aodh's webhook payload carries the event as is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Aodh/Ceilometer trait dtypes.
TEXT, INT, FLOAT, DATETIME = 1, 2, 3, 4


def _dtype(value: Any) -> int:
    if isinstance(value, bool):
        return TEXT
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    return TEXT


def iso(ts: float) -> str:
    """Aodh's timestamp form: ISO 8601, microseconds, no zone suffix (UTC)."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Event:
    event_type: str
    generated: float  # wall clock (s)
    traits: dict[str, Any]  # name -> value (str, int or float)
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    trace_id: str | None = None  # the fault's trace, for the profiler
    severity: str = "moderate"  # for events that are not alarms themselves (critical guard)

    @property
    def project_id(self) -> str | None:
        """The project that owns the event's resource (scopes which alarms may see it)."""
        value = self.traits.get("project_id") or self.traits.get("tenant_id")
        return str(value) if value else None

    def trait_list(self) -> list[list[Any]]:
        return [
            [name, _dtype(v), v if not isinstance(v, bool) else str(v)]
            for name, v in self.traits.items()
        ]

    def as_aodh(self) -> dict[str, Any]:
        """The event as Aodh puts it into ``reason_data``."""
        return {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "generated": iso(self.generated),
            "traits": self.trait_list(),
            "raw": {},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "generated": iso(self.generated),
            "traits": dict(self.traits),
            "severity": self.severity,
            "trace_id": self.trace_id,
        }


# The event types the inspector emits.
INSTANCE_UPDATE = "compute.instance.update"
HOST_DOWN = "compute.host.down"
HOST_UP = "compute.host.up"
PORT_STATUS = "port.data_plane_status"
ACTION_FAILED = "medevac.action.failed"
GUARD_HOLD = "medevac.guard.hold"
# A controller cut off from the coordination backend acts on no host (critical), and
# says again when it is back.
CONTROLLER_ISOLATED = "medevac.controller.isolated"
# The notifier's own: a webhook given up after ``retry_for`` (critical).
DELIVERY_FAILED = "medevac.delivery.failed"

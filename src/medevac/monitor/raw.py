"""Raw faults: what any input (heartbeat detector, Doctor, Alertmanager, Nova) reports.

Every input turns its signal into ``RawFault`` values and hands them to a
``FaultSink``; correlation into verdicts happens behind the sink, the same way for
every source. ``key`` makes inputs idempotent: the same key twice is one fault.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class RawFaultKind(enum.StrEnum):
    HOST_DOWN = "host.down"  # the source believes the host is down
    HOST_UP = "host.up"  # the source believes the host is back
    COMPUTE_PROCESS_DOWN = "compute.process.down"
    COMPUTE_PROCESS_UP = "compute.process.up"
    SERVER_DOWN = "server.down"  # details: server_id
    LINK_DOWN = "link.down"  # details: physnet
    LINK_UP = "link.up"  # details: physnet


@dataclass(frozen=True, slots=True)
class RawFault:
    source: str  # "heartbeat", "doctor", "alertmanager", "nova", ...
    kind: RawFaultKind
    host: str
    observed_at: float  # wall clock (s) the source says the fault happened: T00 estimate
    received_at: float  # wall clock (s) medevac received it: the profiler's T01
    key: str  # idempotency key, unique per fault occurrence and source
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ignored:
    """A fault taken in but not acted on; ``reason`` says why (in the answer to its
    sender and in the log), so nothing accepted is dropped in silence."""

    reason: str
    # The fault it reports is being handled already (the host was judged lost before
    # this report came): not acted on again, but not in vain either.
    under_way: bool = False


class UnknownHost(Exception):
    """The fault names a host medevac does not watch."""

    def __init__(self, host: str) -> None:
        super().__init__(f"unknown host {host!r}")
        self.host = host


class FaultSink(Protocol):
    """Where inputs deliver raw faults."""

    async def submit(self, fault: RawFault) -> bool | Ignored:
        """True: the fault is acted on; False: its key was seen before (a duplicate);
        Ignored: taken in but not acted on, with the reason.

        Raises UnknownHost when the host is not watched.
        """
        ...

"""SNMPv2c traps for the inspector's events, sent to the configured managers.

Seed 002's fault manager sends SNMP traps; NFV operations centres still listen for
them. Each event becomes one trap (fire and forget over UDP; webhooks are the
durable channel):

- ``sysUpTime.0``, then ``snmpTrapOID.0`` = ``<base>.0.<n>`` with ``n`` by event type
  (see ``TRAP_NUMBERS``; 99 for any other type);
- varbinds under ``<base>.1``: ``.1`` event type, ``.2`` message id, ``.3`` generated
  (ISO 8601, UTC), ``.4`` severity, ``.5`` host, ``.6`` instance id, ``.7`` port id,
  ``.8`` state, ``.9`` every trait as JSON. Absent values are empty strings.

``<base>`` defaults to ``1.3.6.1.3.7446`` in the experimental arc; set ``oid_base``
to an arc under your own enterprise number.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.ber import encoder
from pysnmp.proto import api

from medevac.notifier.events import Event, iso

log = logging.getLogger(__name__)

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
TRAP_NUMBERS = {
    "compute.host.down": 1,
    "compute.host.up": 2,
    "compute.instance.update": 3,
    "port.data_plane_status": 4,
    "medevac.action.failed": 5,
    "medevac.guard.hold": 6,
}
OTHER_TRAP = 99


@dataclass(frozen=True)
class TrapManager:
    host: str
    port: int
    community: str  # a secret: never logged
    event_types: tuple[str, ...]  # shell wildcards

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, p) for p in self.event_types)


def parse_oid(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in text.strip(".").split("."))
    except ValueError:
        raise ValueError(f"not an OID: {text!r}") from None
    if len(parts) < 2 or any(p < 0 for p in parts):
        raise ValueError(f"not an OID: {text!r}")
    return parts


def encode_trap(event: Event, base: Sequence[int], community: str, uptime_cs: int) -> bytes:
    """One SNMPv2c trap message for an event, BER-encoded."""
    base = tuple(base)
    traits = event.traits

    def text(value: Any) -> Any:
        return V2C.OctetString(str(value) if value is not None else "")

    varbinds = [
        (V2C.ObjectIdentifier((1, 3, 6, 1, 2, 1, 1, 3, 0)), V2C.TimeTicks(uptime_cs)),
        (
            V2C.ObjectIdentifier((1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)),
            V2C.ObjectIdentifier((*base, 0, TRAP_NUMBERS.get(event.event_type, OTHER_TRAP))),
        ),
        (V2C.ObjectIdentifier((*base, 1, 1)), text(event.event_type)),
        (V2C.ObjectIdentifier((*base, 1, 2)), text(event.message_id)),
        (V2C.ObjectIdentifier((*base, 1, 3)), text(iso(event.generated))),
        (V2C.ObjectIdentifier((*base, 1, 4)), text(event.severity)),
        (V2C.ObjectIdentifier((*base, 1, 5)), text(traits.get("host"))),
        (V2C.ObjectIdentifier((*base, 1, 6)), text(traits.get("instance_id"))),
        (V2C.ObjectIdentifier((*base, 1, 7)), text(traits.get("port_id"))),
        (V2C.ObjectIdentifier((*base, 1, 8)), text(traits.get("state"))),
        (V2C.ObjectIdentifier((*base, 1, 9)), text(json.dumps(traits, sort_keys=True))),
    ]
    pdu = V2C.SNMPv2TrapPDU()
    V2C.apiTrapPDU.set_defaults(pdu)
    V2C.apiTrapPDU.set_varbinds(pdu, varbinds)
    message = V2C.Message()
    V2C.apiMessage.set_defaults(message)
    V2C.apiMessage.set_community(message, community)
    V2C.apiMessage.set_pdu(message, pdu)
    return bytes(encoder.encode(message))


class SnmpTraps:
    """A notifier channel: events in, traps out on one UDP socket."""

    def __init__(self, managers: Iterable[TrapManager], oid_base: Sequence[int]) -> None:
        self.managers = list(managers)
        self.base = tuple(oid_base)
        self.started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.managers:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("0.0.0.0", 0)
            )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def publish(self, events: Iterable[Event]) -> None:
        """Queue the traps for these events; sent by a task of their own, after the
        webhooks this batch started."""
        if not self.managers or self._transport is None:
            return
        batch = list(events)
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, events: list[Event]) -> None:
        assert self._transport is not None
        uptime = int((time.monotonic() - self.started) * 100)
        sent = 0
        for manager in self.managers:
            for event in events:
                if not manager.wants(event.event_type):
                    continue
                sent += 1
                if sent % 10 == 0:
                    await asyncio.sleep(0)  # about 0.5 ms each to encode: let the loop in
                try:
                    data = encode_trap(event, self.base, manager.community, uptime)
                    self._transport.sendto(data, (manager.host, manager.port))
                except Exception as exc:  # a bad manager address must not stop the others
                    self.counters["errors"] += 1
                    log.warning(
                        "trap to %s:%d failed: %s", manager.host, manager.port, type(exc).__name__
                    )
                else:
                    self.counters["sent"] += 1

    def stats(self) -> dict[str, int]:
        return {"managers": len(self.managers), **self.counters}

"""The heartbeat datagram: compact, versioned, authenticated (HMAC-SHA256).

Layout of version 1 (network byte order)::

    magic "MDVH" | version u8 | kind u8 | flags u8 | reserved u8
    seq u64 | boot_id 16 bytes | sent_at f64 (unix seconds)
    host_len u8 | host (UTF-8) | body_len u16 | body (compact JSON)
    mac 32 bytes = HMAC-SHA256(the host's key, every byte before it)

``kind`` is a heartbeat (agent to controller), a probe (controller to agent: "answer
now"), a probe reply (a heartbeat sent in answer), or a request to restart
nova-compute (controller to agent; an agent acts on it only when configured to).
``seq`` rises by one per datagram within one ``boot_id`` (a random id per agent or
controller start), so replays and reordering are recognised without clocks;
``sent_at`` only bounds clock skew. The body carries the agent's local checks.
Encoding and decoding are pure functions.

Each host signs with its own key, derived from the controller's master key
(``host_key``), so a host that is taken over can forge no other host's datagrams:
the monitor checks each datagram with the key of the host it names.
"""

from __future__ import annotations

import enum
import hmac
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAGIC = b"MDVH"
VERSION = 1
MAC_LEN = 32
_HEADER = struct.Struct("!4sBBBBQ16sd")
MAX_DATAGRAM = 1400  # stays below a common path MTU
FLAG_COMPUTE_ALIVE = 0x01


HOST_KEY_CONTEXT = b"medevac-agent:"


def host_key(master: bytes, host: str) -> bytes:
    """The key one host's agent signs with: HMAC-SHA256(master, "medevac-agent:" + host),
    in hex (64 ASCII bytes, what its key file holds)."""
    return hmac.new(master, HOST_KEY_CONTEXT + host.encode(), "sha256").hexdigest().encode()


class HostKeys:
    """The monitor's keys: each host's derived from the master key, which is offered
    last for every host (``decode_signed`` says which key verified a datagram, so the
    caller decides whether a datagram signed with the master key itself is taken)."""

    def __init__(self, master: bytes, hosts: Iterable[str] = ()) -> None:
        self._master = master
        self._known = {h: host_key(master, h) for h in hosts}

    def for_host(self, host: str) -> bytes:
        known = self._known.get(host)
        return known if known is not None else host_key(self._master, host)

    def candidates(self, host: str) -> tuple[bytes, ...]:
        return (self.for_host(host), self._master)

    def is_master(self, key: bytes) -> bool:
        return hmac.compare_digest(key, self._master)


class DatagramKind(enum.IntEnum):
    HEARTBEAT = 1
    PROBE = 2
    PROBE_REPLY = 3
    RESTART_COMPUTE = 4  # controller to agent: restart nova-compute, when allowed


class DropReason(enum.StrEnum):
    """Why a datagram was dropped; counted per reason, never a verdict."""

    MALFORMED = "malformed"
    BAD_VERSION = "bad_version"
    BAD_MAC = "bad_mac"
    UNKNOWN_HOST = "unknown_host"
    REPLAY = "replay"
    CLOCK_SKEW = "clock_skew"


class DatagramError(Exception):
    def __init__(self, reason: DropReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Checks:
    """What the agent sees on its host."""

    compute_alive: bool = True
    links_down: tuple[str, ...] = ()  # physnets whose data-plane link is down
    domains_down: tuple[str, ...] = ()  # server ids whose domain died unexpectedly


@dataclass(frozen=True, slots=True)
class Datagram:
    kind: DatagramKind
    host: str
    seq: int
    boot_id: bytes
    sent_at: float
    checks: Checks = field(default_factory=Checks)


def encode(d: Datagram, key: bytes) -> bytes:
    """Serialise and sign one datagram."""
    host = d.host.encode()
    if not 0 < len(host) < 256:
        raise ValueError("host name must be 1 to 255 bytes")
    if len(d.boot_id) != 16:
        raise ValueError("boot_id must be 16 bytes")
    body = b""
    if d.checks.links_down or d.checks.domains_down:
        payload: dict[str, list[str]] = {}
        if d.checks.links_down:
            payload["l"] = list(d.checks.links_down)
        if d.checks.domains_down:
            payload["d"] = list(d.checks.domains_down)
        body = json.dumps(payload, separators=(",", ":")).encode()
    flags = FLAG_COMPUTE_ALIVE if d.checks.compute_alive else 0
    msg = (
        _HEADER.pack(MAGIC, VERSION, int(d.kind), flags, 0, d.seq, d.boot_id, d.sent_at)
        + struct.pack("!B", len(host))
        + host
        + struct.pack("!H", len(body))
        + body
    )
    out = msg + hmac.digest(key, msg, "sha256")
    if len(out) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(out)} bytes is larger than {MAX_DATAGRAM}")
    return out


def decode(data: bytes, key: bytes) -> Datagram:
    """Verify and parse one datagram signed with ``key``; DatagramError says why it
    is refused.

    The MAC is checked before any field is interpreted, so nothing an attacker
    without the key sends gets further than a length check.
    """
    return decode_signed(data, lambda _host: (key,))[0]


def decode_signed(
    data: bytes, keys_for: Callable[[str], tuple[bytes, ...]]
) -> tuple[Datagram, bytes]:
    """Verify and parse one datagram with the keys ``keys_for`` gives for the host it
    names (tried in order); returns it with the key that verified it.

    Only the host name is read before the MAC is checked, to pick the key.
    """
    if len(data) < _HEADER.size + 1 + 2 + MAC_LEN or len(data) > MAX_DATAGRAM:
        raise DatagramError(DropReason.MALFORMED, f"bad length {len(data)}")
    if data[:4] != MAGIC:
        raise DatagramError(DropReason.MALFORMED, "bad magic")
    if data[4] != VERSION:
        raise DatagramError(DropReason.BAD_VERSION, f"version {data[4]} not understood")
    msg, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    named = msg[_HEADER.size + 1 : _HEADER.size + 1 + msg[_HEADER.size]]
    try:
        keys = keys_for(named.decode())
    except UnicodeDecodeError:
        raise DatagramError(DropReason.MALFORMED, "host name is not UTF-8") from None
    for key in keys:
        if hmac.compare_digest(mac, hmac.digest(key, msg, "sha256")):
            return _parse(msg), key
    raise DatagramError(DropReason.BAD_MAC, "bad MAC")


def _parse(msg: bytes) -> Datagram:
    try:
        _, _, kind, flags, _, seq, boot_id, sent_at = _HEADER.unpack_from(msg)
        pos = _HEADER.size
        (host_len,) = struct.unpack_from("!B", msg, pos)
        pos += 1
        host = msg[pos : pos + host_len].decode()
        pos += host_len
        (body_len,) = struct.unpack_from("!H", msg, pos)
        pos += 2
        body = msg[pos : pos + body_len]
        if len(body) != body_len or pos + body_len != len(msg) or not host:
            raise ValueError("lengths do not add up")
        payload = json.loads(body) if body else {}
        checks = Checks(
            compute_alive=bool(flags & FLAG_COMPUTE_ALIVE),
            links_down=tuple(str(x) for x in payload.get("l", ())),
            domains_down=tuple(str(x) for x in payload.get("d", ())),
        )
        return Datagram(DatagramKind(kind), host, seq, boot_id, sent_at, checks)
    except (struct.error, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise DatagramError(DropReason.MALFORMED, f"malformed: {exc}") from None


@dataclass
class SequenceGuard:
    """Per-host replay protection: (boot_id, seq) must move forward."""

    boot_id: bytes = b""
    seq: int = -1
    boot_started_at: float = 0.0

    def admit(self, d: Datagram) -> Admission:
        """NEW (and remembered) when ``d`` is newer than anything seen from the host."""
        if d.boot_id == self.boot_id:
            if d.seq == self.seq:
                return Admission.COPY  # the agent sends each heartbeat more than once
            if d.seq < self.seq:
                return Admission.REPLAY
            self.seq = d.seq
            return Admission.NEW
        # A new boot id: the agent restarted. Accept it only if it was sent after
        # the current boot began, so an old boot's datagrams cannot be replayed.
        if self.boot_id and d.sent_at <= self.boot_started_at:
            return Admission.REPLAY
        self.boot_id, self.seq, self.boot_started_at = d.boot_id, d.seq, d.sent_at
        return Admission.NEW


class Admission(enum.Enum):
    NEW = "new"
    COPY = "copy"
    REPLAY = "replay"

"""Emulated BMCs speaking IPMI 2.0 (RMCP+ / lanplus) on loopback UDP.

Each simulated compute host gets one BMC.  The protocol work (RAKP handshake,
integrity, AES payload encryption, command framing) is done by pyghmi's server
classes; this module adds what the shipped classes lack:

* its own socket loop: the BMC sockets are never put into pyghmi's process-wide
  client I/O loop, so the product's pyghmi client can run in the same process,
  every packet is routed to the session it belongs to, an exception in a handler
  is logged and the loop goes on, and ``stop()`` really stops and closes;
* sockets stay non-blocking for good (pyghmi's send helper would flip a shared
  socket to blocking under the reader's feet), and session traffic is framed
  without the locks of pyghmi's client sessions, so a client in the same
  process that is waiting out a dead BMC cannot stall the emulated ones;
* an open-session request that does not propose cipher suite 3 (HMAC-SHA1,
  HMAC-SHA1-96, AES-CBC-128) is refused with RMCP+ status 0x11, so the pyghmi
  client falls back from suite 17 instead of crashing;
* an unknown or empty user name gets RAKP2 with status 0x0d (unauthorized name)
  and a wrong password in RAKP3 gets RAKP4 status 0x0f, so clients fail at once;
* idle sessions are reaped and each BMC holds a bounded number of sessions.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import selectors
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.command as pyghmi_command
import pyghmi.ipmi.private.serversession as pyghmi_serversession
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["BmcFarm", "BmcSpec", "PowerHooks"]

LOG = logging.getLogger(__name__)

_RMCP_IPMI_HEADER = b"\x06\x00\xff\x07"
_AUTHTYPE_NONE = 0x00
_AUTHTYPE_RMCPPLUS = 0x06

_PAYLOAD_IPMI = 0x00
_PAYLOAD_OPEN_SESSION_REQUEST = 0x10
_PAYLOAD_OPEN_SESSION_RESPONSE = 0x11
_PAYLOAD_RAKP1 = 0x12
_PAYLOAD_RAKP2 = 0x13
_PAYLOAD_RAKP3 = 0x14
_PAYLOAD_RAKP4 = 0x15

# RMCP+ status codes (IPMI 2.0 table 13-15)
_RMCP_UNAUTHORIZED_NAME = 0x0D
_RMCP_INVALID_INTEGRITY_CHECK = 0x0F
_RMCP_NO_CIPHER_SUITE_MATCH = 0x11

# Cipher suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128 (the only one the
# pyghmi server implements).
_SUITE3_ALGORITHMS = (1, 1, 1)

# IPMI completion codes
_CC_OK = 0x00
_CC_INVALID_COMMAND = 0xC1
_CC_INVALID_DATA_FIELD = 0xCC
_CC_UNSPECIFIED = 0xFF

_SESSION_IDLE_TIMEOUT = 120.0
_MAX_SESSIONS_PER_BMC = 64
_LOOP_TICK = 1.0
_MAX_DATAGRAM = 3000


class PowerHooks(Protocol):
    """What a BMC does to its host."""

    def power_state(self, host: str) -> bool:
        """True when the host is powered on."""
        ...

    def power_off(self, host: str) -> None:
        """Hard power off (IPMI 'power off')."""
        ...

    def power_on(self, host: str) -> None: ...

    def power_reset(self, host: str) -> None:
        """Off then on."""
        ...

    def power_soft(self, host: str) -> None:
        """ACPI soft off (may simply be off)."""
        ...


@dataclass(frozen=True)
class BmcSpec:
    host: str
    port: int
    username: str
    password: str

    def __repr__(self) -> str:
        return f"BmcSpec(host={self.host!r}, port={self.port}, username={self.username!r})"


class _SendOnlyView:
    """What pyghmi's code gets as its socket.

    ``pyghmi.ipmi.private.session._io_sendto`` calls ``setblocking(1)`` on the
    socket it is given, unless the object has an ``fd`` attribute, in which case
    it sends through ``fd``.  This view keeps the real socket non-blocking: a
    full send buffer drops the datagram (pyghmi ignores send errors), which is
    what UDP does anyway.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock

    def setblocking(self, flag: bool) -> None:
        return None

    def getsockname(self) -> Any:
        return self.fd.getsockname()


def _rmcpplus_unauthenticated(payload_type: int, payload: bytes) -> bytes:
    """An RMCP+ packet outside any session (session id 0, sequence 0)."""
    return (
        _RMCP_IPMI_HEADER
        + bytes([_AUTHTYPE_RMCPPLUS, payload_type])
        + struct.pack("<IIH", 0, 0, len(payload))
        + payload
    )


def _proposed_algorithms(request: bytes) -> tuple[int, int, int] | None:
    """(auth, integrity, confidentiality) from an open-session request.

    A zero-length algorithm payload lets the BMC choose; it is reported as the
    suite 3 algorithm.  ``None`` when the request is malformed.
    """
    if len(request) < 32:
        return None
    chosen: list[int] = []
    for offset, suite3_algo in zip((8, 16, 24), _SUITE3_ALGORITHMS, strict=True):
        length = request[offset + 3]
        chosen.append(request[offset + 4] & 0x3F if length else suite3_algo)
    return chosen[0], chosen[1], chosen[2]


class _LabSession(pyghmi_serversession.ServerSession):  # type: ignore[misc]
    """One RMCP+ session on an emulated BMC.

    Built like ``ServerSession.__init__`` but without registering in pyghmi's
    process-wide routing table (``Session.bmc_handlers``): the farm's loop routes
    packets itself, by managed session id.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> _LabSession:
        return object.__new__(cls)

    def __init__(
        self,
        bmc: _EmulatedBmc,
        clientaddr: Any,
        request: bytes,
        taken_ids: Callable[[int], bool],
    ) -> None:
        self.uuid = bmc.uuid
        self.currhashlib = hashlib.sha1
        self.currhashlen = 12
        self.rqaddr = 0x20
        self.authdata = bmc.authdata
        self.servermode = True
        self.ipmiversion = 2.0
        self.sequencenumber = 0
        self.sessionid = 0
        self.bmc = bmc
        self.lastpayload = None
        self.last_payload_type = None
        self.rqlun = None
        self.broken = False
        self.authtype = _AUTHTYPE_RMCPPLUS
        self.integrityalgo = 0
        self.confalgo = 0
        self.kg = bmc.kg
        self.k1: bytes | None = None
        self.localsid = None
        self.remseqnumber = None
        self.ipmicallback: Callable[[dict[str, Any]], None] | None = None
        self._customkeepalives = None
        self.socket = bmc.serversocket
        self.sockaddr = clientaddr
        self.pendingpayloads: collections.deque[Any] = collections.deque()
        self.pktqueue: collections.deque[Any] = collections.deque()
        self.last_seen = time.monotonic()
        self.closed = False
        self._taken_ids = taken_ids
        response = self.create_open_session_response(bytearray(request))
        self.send_payload(response, _PAYLOAD_OPEN_SESSION_RESPONSE, retry=False)

    @property
    def managed_id(self) -> int:
        return int(struct.unpack("<I", bytes(self.managedsessionid))[0])

    def create_open_session_response(self, request: bytearray) -> bytearray:
        while True:
            response: bytearray = super().create_open_session_response(request)
            managed = self.managed_id
            if managed != 0 and not self._taken_ids(managed):
                return response

    def _got_rmcp_openrequest(self, data: Any) -> None:
        # A repeated open-session request is routed as a new session by the
        # farm; one arriving here inside a session is stale.
        return None

    def _send_status(self, payload_type: int, tag: int, status: int) -> None:
        payload = bytes([tag, status, 0, 0]) + bytes(self.clientsessionid)
        self.bmc.send_raw(_rmcpplus_unauthenticated(payload_type, payload), self.sockaddr)

    def _got_rakp1(self, data: Any) -> None:
        if len(data) < 28:
            return
        name_length = data[27]
        name = bytes(data[28 : 28 + name_length])
        try:
            known = name_length > 0 and self.authdata.get(name.decode("utf-8")) is not None
        except UnicodeDecodeError:
            known = False
        if not known:
            self._send_status(_PAYLOAD_RAKP2, data[0], _RMCP_UNAUTHORIZED_NAME)
            self.closed = True
            return
        super()._got_rakp1(data)
        self.clientpriv = self.maxpriv

    def _got_rakp3(self, data: Any) -> None:
        if not hasattr(self, "Rc") or len(data) < 8:
            return
        super()._got_rakp3(data)
        if self.localsid is None and data[1] == 0:
            self._send_status(_PAYLOAD_RAKP4, data[0], _RMCP_INVALID_INTEGRITY_CHECK)
            self.closed = True

    def close_server_session(self) -> None:
        self.closed = True

    # pyghmi's ``send_payload`` and ``_parse_payload`` take the process-wide
    # locks of its client sessions; a client in the same process that holds
    # them while it waits out a dead BMC would stall every emulated BMC.  The
    # server side needs none of that bookkeeping (no retries, no keepalives),
    # so these two are done here without the locks.

    def send_payload(
        self, payload: Any = (), payload_type: Any = None, retry: bool = False, **_: Any
    ) -> None:
        """Frame and send one RMCP+ payload (IPMI 2.0 table 13-8), never retried."""
        body = bytes(payload)
        message = bytearray(_RMCP_IPMI_HEADER)
        flags = (0x40 if self.integrityalgo else 0) | (0x80 if self.confalgo else 0)
        message += bytes([_AUTHTYPE_RMCPPLUS, payload_type | flags])
        message += struct.pack("<II", self.sessionid, self.sequencenumber)
        if self.confalgo:  # AES-CBC-128 with a random IV (table 13-20)
            pad_length = (16 - (len(body) + 1) % 16) % 16
            padded = body + bytes(range(1, pad_length + 1)) + bytes([pad_length])
            iv = os.urandom(16)
            encryptor = Cipher(algorithms.AES(self.aeskey), modes.CBC(iv)).encryptor()
            body = iv + encryptor.update(padded) + encryptor.finalize()
        message += struct.pack("<H", len(body)) + body
        if self.integrityalgo:  # HMAC-SHA1-96 over the session header and trailer
            assert self.k1 is not None  # set with the integrity algorithm in RAKP3
            integrity_pad = (4 - (len(message) - 2) % 4) % 4
            message += b"\xff" * integrity_pad + bytes([integrity_pad, 0x07])
            message += hmac.new(self.k1, bytes(message[4:]), hashlib.sha1).digest()[:12]
        if self.sequencenumber:
            self.sequencenumber += 1
        self.bmc.send_raw(bytes(message), self.sockaddr)

    def _parse_payload(self, payload: bytearray) -> None:
        """A request from the client (``_parse_ipmi_payload`` framed it)."""
        response = {"netfn": payload[1] >> 2, "command": payload[5], "data": payload[6:-1]}
        if self.ipmicallback is not None:  # set once the session is established
            self.ipmicallback(response)


class _EmulatedBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    """The BMC of one simulated host.

    ``IpmiServer.__init__`` is deliberately not called: it would hand the socket
    to pyghmi's process-wide client loop.  The attributes it sets are set here.
    """

    def __init__(self, spec: BmcSpec, sock: socket.socket, hooks: PowerHooks, bmcuuid: Any) -> None:
        self.spec = spec
        self.host = spec.host
        self.hooks = hooks
        self.revision = 0
        self.deviceid = 0x20
        self.firmwaremajor = 1
        self.firmwareminor = 0
        self.ipmiversion = 2
        self.additionaldevices = 0
        self.mfgid = 0
        self.prodid = 0
        self.pktqueue: collections.deque[Any] = collections.deque()
        self.uuid = bmcuuid
        self.authdata = {spec.username: spec.password}
        self.authcap = struct.pack(
            "BBBBBBBBB", 0, 1, 0b10000000, 0b00000100, 0b00000010, 0, 0, 0, 0
        )
        self.kg = None
        self.timeout = 60
        self.port = spec.port
        self.real_socket = sock
        self.serversocket = _SendOnlyView(sock)
        self.reachable = True
        self.bootdevice: Any = "default"
        self.sessions: dict[int, _LabSession] = {}

    # -- transport -----------------------------------------------------------

    def send_raw(self, packet: bytes, sockaddr: Any) -> None:
        try:
            self.real_socket.sendto(packet, sockaddr)
        except OSError as exc:
            LOG.debug("BMC %s: send to %s failed: %s", self.host, sockaddr, exc)

    def handle_datagram(self, data: bytes, sockaddr: Any) -> None:
        if not self.reachable:
            return
        if len(data) < 16 or data[:4] != _RMCP_IPMI_HEADER:
            return
        authtype = data[4]
        if authtype == _AUTHTYPE_NONE:
            # IPMI 1.5 framing: only session-less requests (channel
            # authentication capabilities) are served; there are no 1.5 sessions.
            if struct.unpack("<I", data[9:13])[0] == 0:
                self.sessionless_data(data, sockaddr)
            return
        if authtype != _AUTHTYPE_RMCPPLUS:
            return
        payload_type = data[5] & 0x3F
        payload = data[16:]
        if payload_type == _PAYLOAD_OPEN_SESSION_REQUEST:
            self._open_session(payload, sockaddr)
            return
        if payload_type in (_PAYLOAD_RAKP1, _PAYLOAD_RAKP3):
            if len(payload) < 8:
                return
            managed = struct.unpack("<I", payload[4:8])[0]
        elif payload_type == _PAYLOAD_IPMI:  # no SOL: payload activation is refused
            managed = struct.unpack("<I", data[6:10])[0]
            if managed == 0:
                self.sessionless_data(data, sockaddr)
                return
        else:
            return
        session = self.sessions.get(managed)
        if session is None or session.sockaddr != sockaddr:
            return
        session.last_seen = time.monotonic()
        session._handle_ipmi_packet(bytearray(data), sockaddr=sockaddr)
        if session.closed:
            self.sessions.pop(managed, None)

    def _open_session(self, request: bytes, sockaddr: Any) -> None:
        algorithms = _proposed_algorithms(request)
        if algorithms is None:
            return
        if algorithms != _SUITE3_ALGORITHMS:
            refusal = bytes([request[0], _RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]
            self.send_raw(
                _rmcpplus_unauthenticated(_PAYLOAD_OPEN_SESSION_RESPONSE, refusal), sockaddr
            )
            return
        if len(self.sessions) >= _MAX_SESSIONS_PER_BMC:
            oldest = min(self.sessions.values(), key=lambda s: s.last_seen)
            self.sessions.pop(oldest.managed_id, None)
        session = _LabSession(self, sockaddr, request, self.sessions.__contains__)
        self.sessions[session.managed_id] = session

    def reap_sessions(self, now: float) -> None:
        for managed, session in list(self.sessions.items()):
            if session.closed or now - session.last_seen > _SESSION_IDLE_TIMEOUT:
                del self.sessions[managed]

    # -- IPMI commands -------------------------------------------------------

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        netfn, command = request["netfn"], request["command"]
        try:
            if netfn == 6 and command == 0x01:  # get device id ('mc info')
                self.send_device_id(session)
            elif netfn == 6 and command == 0x37:  # get system guid
                session.send_ipmi_response(data=bytearray(self.uuid.bytes_le))
            elif netfn == 0 and command == 0x01:  # get chassis status
                self.get_chassis_status(session)
            elif netfn == 0 and command == 0x02:  # chassis control
                self.control_chassis(request, session)
            elif netfn == 0 and command == 0x08:  # set system boot options
                self.set_system_boot_options(request, session)
            elif netfn == 0 and command == 0x09:  # get system boot options
                self.get_system_boot_options(request, session)
            else:
                session.send_ipmi_response(code=_CC_INVALID_COMMAND)
        except (NotImplementedError, IndexError, KeyError):
            session.send_ipmi_response(code=_CC_INVALID_DATA_FIELD)
        except Exception:
            LOG.exception(
                "BMC %s: command netfn=0x%02x cmd=0x%02x failed", self.host, netfn, command
            )
            session.send_ipmi_response(code=_CC_UNSPECIFIED)

    def get_power_state(self) -> str:
        return "on" if self.hooks.power_state(self.host) else "off"

    def get_chassis_status(self, session: Any) -> None:
        on = self.get_power_state() == "on"
        # current power state, last power event, misc chassis state
        session.send_ipmi_response(data=[0x01 if on else 0x00, 0, 0])

    def control_chassis(self, request: dict[str, Any], session: Any) -> None:
        actions: dict[int, Callable[[str], None]] = {
            0: self.hooks.power_off,
            1: self.hooks.power_on,
            2: self.hooks.power_reset,  # power cycle
            3: self.hooks.power_reset,  # hard reset
            5: self.hooks.power_soft,  # ACPI soft shutdown
        }
        action = actions.get(request["data"][0])
        if action is None:
            session.send_ipmi_response(code=_CC_INVALID_DATA_FIELD)
            return
        LOG.info("BMC %s: chassis control %s", self.host, action.__name__)
        action(self.host)
        session.send_ipmi_response(code=_CC_OK)

    def get_boot_device(self) -> Any:
        return self.bootdevice

    def set_boot_device(self, bootdevice: Any) -> None:
        self.bootdevice = bootdevice

    def get_system_guid(self) -> Any:
        return self.uuid

    def get_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        if request["data"][0] != 5:  # only the boot flags parameter
            session.send_ipmi_response(code=0x80)
            return
        device = self.get_boot_device()
        if not isinstance(device, int):
            device = pyghmi_command.boot_devices.get(device, 0)
        session.send_ipmi_response(data=[1, 5, 0b10000000, device, 0, 0, 0])


class _SelectorLoop:
    """One daemon thread serving the sockets of every BMC of a farm."""

    def __init__(self, name: str) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: collections.deque[_EmulatedBmc] = collections.deque()
        self._bmcs: list[_EmulatedBmc] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, bmc: _EmulatedBmc) -> None:
        self._pending.append(bmc)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # buffer full: a wake-up is pending anyway
            self._wake_w.send(b"\x00")

    def stop(self, timeout: float) -> bool:
        self._stopping.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        alive = self._thread.is_alive()
        if not alive:
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
        return not alive

    def _run(self) -> None:
        last_reap = time.monotonic()
        while not self._stopping.is_set():
            try:
                self._register_pending()
                for key, _ in self._selector.select(_LOOP_TICK):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._drain(key.data)
                now = time.monotonic()
                if now - last_reap >= _LOOP_TICK:
                    last_reap = now
                    for bmc in self._bmcs:
                        bmc.reap_sessions(now)
            except Exception:
                LOG.exception("BMC farm loop error; continuing")
                time.sleep(0.01)

    def _register_pending(self) -> None:
        while self._pending:
            bmc = self._pending.popleft()
            self._selector.register(bmc.real_socket, selectors.EVENT_READ, bmc)
            self._bmcs.append(bmc)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _drain(self, bmc: _EmulatedBmc) -> None:
        # Bounded per wake-up so that one busy BMC cannot starve the others.
        for _ in range(64):
            try:
                data, sockaddr = bmc.real_socket.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                LOG.debug("BMC %s: receive failed: %s", bmc.host, exc)
                return
            try:
                bmc.handle_datagram(data, sockaddr)
            except Exception:
                LOG.exception("BMC %s: error handling a packet from %s", bmc.host, sockaddr)


class BmcFarm:
    """Emulated BMCs for many hosts, served from one daemon thread."""

    def __init__(self, hooks: PowerHooks, address: str = "127.0.0.1") -> None:
        parsed = ipaddress.ip_address(address)
        if not parsed.is_loopback:
            raise ValueError(f"emulated BMCs bind loopback addresses only, not {address}")
        self._hooks = hooks
        self._address = address
        self._family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
        self._lock = threading.Lock()
        self._bmcs: dict[str, _EmulatedBmc] = {}
        self._loop: _SelectorLoop | None = None
        self._stopped = False

    @property
    def address(self) -> str:
        return self._address

    def add(self, host: str, username: str, password: str, port: int = 0) -> BmcSpec:
        """Create the BMC of ``host``; ``port`` 0 picks a free UDP port."""
        if not username:
            raise ValueError("a BMC needs a user name")
        with self._lock:
            if self._stopped:
                raise RuntimeError("the BMC farm is stopped")
            if host in self._bmcs:
                raise ValueError(f"host {host} already has a BMC")
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                sock.bind((self._address, port))
                bound_port = int(sock.getsockname()[1])
            except OSError:
                sock.close()
                raise
            spec = BmcSpec(host=host, port=bound_port, username=username, password=password)
            bmc = _EmulatedBmc(spec, sock, self._hooks, _uuid_for(host))
            self._bmcs[host] = bmc
            if self._loop is not None:
                self._loop.add(bmc)
        LOG.debug("BMC for %s on %s:%d", host, self._address, bound_port)
        return spec

    def start(self) -> None:
        """Serve every BMC (those added later too) from one daemon thread."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the BMC farm is stopped")
            if self._loop is not None:
                return
            self._loop = _SelectorLoop(name="bmc-farm")
            for bmc in self._bmcs.values():
                self._loop.add(bmc)
            self._loop.start()

    def set_reachable(self, host: str, reachable: bool) -> None:
        """``False``: the BMC silently drops every packet it receives."""
        with self._lock:
            bmc = self._bmcs[host]
        bmc.reachable = reachable

    def is_reachable(self, host: str) -> bool:
        with self._lock:
            return self._bmcs[host].reachable

    def specs(self) -> list[BmcSpec]:
        with self._lock:
            return [bmc.spec for bmc in self._bmcs.values()]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, join the thread (bounded by ``timeout``), close the sockets."""
        with self._lock:
            self._stopped = True
            loop, self._loop = self._loop, None
            bmcs = list(self._bmcs.values())
        if loop is not None and not loop.stop(timeout):
            LOG.warning("BMC farm thread did not stop within %.1f s", timeout)
        for bmc in bmcs:
            bmc.sessions.clear()
            bmc.real_socket.close()

    def __enter__(self) -> BmcFarm:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _uuid_for(host: str) -> uuid.UUID:
    """A stable system GUID per host name (so restarts keep the identity)."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"{host}.bmc.medevac.lab")

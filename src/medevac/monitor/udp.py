"""The heartbeat socket: a UDP endpoint that drains its queue on every wake-up.

asyncio's own datagram transport reads one datagram per turn of the event loop, so
10,000 hosts at 1 Hz cost 10,000 trips through the selector a second. This endpoint
reads what is queued (up to a bound, so timers and the API still get their turn)
each time the socket is readable, and hands every datagram to the same
`asyncio.DatagramProtocol` interface; the monitor cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

# Larger than any valid datagram (protocol.MAX_DATAGRAM), so an oversized one arrives
# oversized, and is dropped as malformed, instead of truncated into a valid size.
READ_SIZE = 2048
# A bound, so that one wake-up in a burst holds the loop for about a millisecond, not
# for the whole queue: at 10,000 hosts a second, 64 keeps the loop lag where asyncio's
# transport has it and still halves the CPU (docs/benchmarks.md, heartbeats).
MAX_BATCH = 64


class DrainingDatagramTransport(asyncio.DatagramTransport):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self.send_dropped = 0  # datagrams the kernel had no room for (UDP: not retried)
        protocol.connection_made(self)
        loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        recv = self._sock.recvfrom
        deliver = self._protocol.datagram_received
        for _ in range(MAX_BATCH):
            try:
                data, addr = recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                self._protocol.error_received(exc)
                return
            deliver(data, addr)

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.send_dropped += 1
        except OSError as exc:
            self._protocol.error_received(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


async def open_draining_endpoint(
    protocol: asyncio.DatagramProtocol, host: str, port: int
) -> DrainingDatagramTransport:
    """Bind a UDP socket on (host, port) and serve `protocol` from it."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)  # raises if none
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    try:
        sock.setblocking(False)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return DrainingDatagramTransport(loop, sock, protocol)

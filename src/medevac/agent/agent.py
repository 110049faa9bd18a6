"""The agent's sender: signed heartbeats at a fixed interval, and answers to probes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import cast

from medevac.agent.probes import LocalProbes
from medevac.monitor.protocol import (
    Datagram,
    DatagramError,
    DatagramKind,
    decode,
    encode,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    host: str
    controllers: tuple[tuple[str, int], ...]
    key: bytes
    interval: float = 0.1
    copies: int = 2  # each heartbeat is sent this many times, ``copy_gap`` apart
    copy_gap: float = 0.01
    bind: tuple[str, int] = ("0.0.0.0", 0)


class Agent(asyncio.DatagramProtocol):
    """One host's agent. ``run()`` until cancelled; ``muted`` drops what it sends."""

    def __init__(self, config: AgentConfig, probes: LocalProbes) -> None:
        self.config = config
        self.probes = probes
        self.boot_id = os.urandom(16)
        self.seq = 0
        self.sent = 0
        self.muted = False  # the lab uses it for a management-network partition
        self.boot = 0  # which boot of its host this agent belongs to (the lab's count)
        self._transport: asyncio.DatagramTransport | None = None

    def _next(self, kind: DatagramKind) -> bytes:
        self.seq += 1
        d = Datagram(
            kind, self.config.host, self.seq, self.boot_id, time.time(), self.probes.checks()
        )
        return encode(d, self.config.key)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self.muted:
            self._transport.sendto(data, addr)
            self.sent += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            d = decode(data, self.config.key)
        except DatagramError:
            return
        if d.kind is DatagramKind.PROBE and d.host == self.config.host:
            self._send(self._next(DatagramKind.PROBE_REPLY), addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("agent socket error: %s", exc)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=self.config.bind
        )
        try:
            next_at = loop.time()
            while True:
                data = self._next(DatagramKind.HEARTBEAT)
                for copy in range(self.config.copies):
                    if copy:
                        await asyncio.sleep(self.config.copy_gap)
                    for addr in self.config.controllers:
                        self._send(data, addr)
                next_at += self.config.interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        finally:
            transport.close()

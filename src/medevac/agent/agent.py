"""The agent: signed heartbeats at a fixed interval, answers to probes, and (when
allowed) nova-compute restarted at the controller's request."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
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
    # Restarts nova-compute when the controller asks (signed, fresh, never replayed);
    # None: such requests are ignored.
    restart_compute: Callable[[], Awaitable[None]] | None = None
    restart_min_interval: float = 60.0  # at most one restart this often (s)
    max_clock_skew: float = 5.0  # a request sent longer ago than this is refused (s)


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
        self._requests: dict[bytes, int] = {}  # controller boot id -> last seq acted on
        self._last_restart = float("-inf")
        self.restarts = 0
        self._restarting: asyncio.Task[None] | None = None

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
        if d.host != self.config.host:
            return
        if d.kind is DatagramKind.PROBE:
            self._send(self._next(DatagramKind.PROBE_REPLY), addr)
        elif d.kind is DatagramKind.RESTART_COMPUTE:
            self._restart_requested(d)

    def _restart_requested(self, d: Datagram) -> None:
        """Act once per (controller boot, seq), only on a fresh request, at most once
        per ``restart_min_interval``: a replayed or repeated request restarts nothing."""
        restart = self.config.restart_compute
        if restart is None:
            log.warning("nova-compute restart requested, but this agent may not restart it")
            return
        if abs(time.time() - d.sent_at) > self.config.max_clock_skew:
            return
        if d.seq <= self._requests.get(d.boot_id, 0):
            return
        self._requests[d.boot_id] = d.seq
        now = time.monotonic()
        if now - self._last_restart < self.config.restart_min_interval:
            return
        if self._restarting is not None and not self._restarting.done():
            return
        self._last_restart = now
        self.restarts += 1
        log.warning("restarting nova-compute at the controller's request")
        self._restarting = asyncio.ensure_future(restart())
        self._restarting.add_done_callback(_log_failure)

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


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("restarting nova-compute failed", exc_info=task.exception())

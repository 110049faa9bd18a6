"""What a host monitor under test reports to and reads from, when those are not the
point of the test: a sink that keeps the verdicts, BMCs that say on, no Nova; and the
hosts' agents, as signed heartbeats handed straight to the monitor."""

from __future__ import annotations

import os
import time
from typing import Any

from medevac.monitor.hosts import HostMonitor
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode, host_key
from medevac.monitor.verdicts import Verdict

KEY = b"k" * 32


class Sink:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.suspected: list[tuple[str, int]] = []  # (host, verdicts published before)

    def on_verdict(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)


class PowerOn:
    async def is_off(self, host: str) -> bool:
        return False


class NoNova:
    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {}


class Agents:
    """The hosts' agents: each beat sends one signed heartbeat per host named."""

    def __init__(self, monitor: HostMonitor, hosts: list[str]) -> None:
        self.monitor = monitor
        self.boots = {h: os.urandom(16) for h in hosts}
        self.seq = 0

    def beat(self, hosts: list[str]) -> None:
        self.seq += 1
        for h in hosts:
            d = Datagram(DatagramKind.HEARTBEAT, h, self.seq, self.boots[h], time.time(), Checks())
            self.monitor.datagram_received(encode(d, host_key(KEY, d.host)), ("127.0.0.1", 9))

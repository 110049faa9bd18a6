"""Keeps the topology fresh: a full resync at start and every period."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from medevac.cloud.models import Port, Server
from medevac.inspector.topology import PortInfo, ServerInfo, Topology

log = logging.getLogger(__name__)


class CloudListing(Protocol):
    async def list_servers(self, host: str | None = None) -> list[Server]: ...

    async def list_ports(self, host: str | None = None) -> list[Port]: ...

    async def network_physnets(self) -> dict[str, str | None]: ...


async def resync(cloud: CloudListing, topology: Topology) -> None:
    """Replace the cache with the cloud's listing (three listings, in parallel)."""
    started = time.time()
    servers, ports, physnets = await asyncio.gather(
        cloud.list_servers(), cloud.list_ports(), cloud.network_physnets()
    )
    topology.replace(
        (ServerInfo.of(s) for s in servers),
        (PortInfo.of(p, physnets) for p in ports if p.device_id),
        started,
    )


class TopologySync:
    def __init__(self, cloud: CloudListing, topology: Topology, interval: float) -> None:
        self.cloud = cloud
        self.topology = topology
        self.interval = interval
        self.error: str | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await resync(self.cloud, self.topology)
            except Exception as exc:  # the cloud is away: keep the old cache, say so
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("topology resync failed: %s", self.error)
                await asyncio.sleep(min(self.interval, 5.0))
                continue
            self.error = None
            self.ready.set()
            await asyncio.sleep(self.interval)

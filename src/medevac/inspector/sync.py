"""Keeps the topology fresh: a full resync at start and every period."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from medevac.cloud.models import Port, Server
from medevac.inspector.topology import PortInfo, ServerInfo, Topology

log = logging.getLogger(__name__)

FIRST_RETRY = 5.0  # s after a failed resync, doubling up to the resync interval


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
    await topology.rebuild(
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
        retry = FIRST_RETRY
        while True:
            try:
                await resync(self.cloud, self.topology)
            except Exception as exc:  # the cloud is away: keep the old cache, say so
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("topology resync failed (next try in %.0f s): %s", retry, self.error)
                # Backing off: a cloud too busy to list (it is evacuating a host, say)
                # goes on serving an abandoned listing; asking again soon only adds one.
                await asyncio.sleep(min(self.interval, retry))
                retry = min(self.interval, retry * 2)
                continue
            self.error = None
            retry = FIRST_RETRY
            self.ready.set()
            await asyncio.sleep(self.interval)

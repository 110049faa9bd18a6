"""The inspector's cache of which servers and ports live on which host.

Kept current from Nova's versioned notifications and a periodic full resync (Doctor's
guideline), so on the fault path a host's servers and ports are a dictionary lookup,
never an API listing. It holds what the cloud listed or notified, never what the
inspector set: someone may undo that before the next listing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from medevac.cloud.models import DataPlaneStatus, Port, Server


@dataclass(slots=True)
class ServerInfo:
    id: str
    name: str
    project_id: str
    host: str | None
    vm_state: str | None
    task_state: str | None
    metadata: Mapping[str, str]

    @classmethod
    def of(cls, s: Server) -> ServerInfo:
        return cls(s.id, s.name, s.project_id, s.host, s.vm_state, s.task_state, s.metadata)


@dataclass(slots=True)
class PortInfo:
    id: str
    project_id: str
    device_id: str
    host: str | None
    network_id: str
    physnet: str | None
    data_plane_status: DataPlaneStatus | None

    @classmethod
    def of(cls, p: Port, physnets: Mapping[str, str | None]) -> PortInfo:
        return cls(
            p.id,
            p.project_id,
            p.device_id,
            p.host,
            p.network_id,
            physnets.get(p.network_id),
            p.data_plane_status,
        )


def _slices(slice_s: float) -> Iterator[bool]:
    """One answer per item put: True once about ``slice_s`` has passed since the last
    True (the clock is read every 256 items)."""
    until = time.perf_counter() + slice_s
    while True:
        for _ in range(255):
            yield False
        if time.perf_counter() >= until:
            until = time.perf_counter() + slice_s
            yield True
        else:
            yield False


Item = TypeVar("Item", ServerInfo, PortInfo)


def _place(table: dict[str, Item], by_host: dict[str, dict[str, Item]], info: Item) -> None:
    """Put ``info`` in ``table`` and under its host, off the host it was on."""
    old = table.get(info.id)
    if old is not None and old.host != info.host and old.host is not None:
        by_host.get(old.host, {}).pop(info.id, None)
    table[info.id] = info
    if info.host is not None:
        by_host.setdefault(info.host, {})[info.id] = info


def _drop(table: dict[str, Item], by_host: dict[str, dict[str, Item]], item_id: str) -> None:
    old = table.pop(item_id, None)
    if old is not None and old.host is not None:
        by_host.get(old.host, {}).pop(item_id, None)


class Topology:
    """host -> servers and host -> ports, with O(1) lookups and moves."""

    def __init__(self) -> None:
        self._servers: dict[str, ServerInfo] = {}
        self._ports: dict[str, PortInfo] = {}
        self._servers_by_host: dict[str, dict[str, ServerInfo]] = {}
        self._ports_by_host: dict[str, dict[str, PortInfo]] = {}
        self.synced_at: float | None = None
        self.updates = 0  # incremental changes applied since start
        # Nova's notifications applied while a resync builds the new cache: applied
        # again on it before it takes over, so none is lost to the swap.
        self._journal: list[tuple[str, Mapping[str, Any]]] | None = None

    # -- lookups ------------------------------------------------------------------

    def server(self, server_id: str) -> ServerInfo | None:
        return self._servers.get(server_id)

    def port(self, port_id: str) -> PortInfo | None:
        return self._ports.get(port_id)

    def servers_on(self, host: str) -> list[ServerInfo]:
        return list(self._servers_by_host.get(host, {}).values())

    def ports_on(self, host: str, physnet: str | None = None) -> list[PortInfo]:
        ports = self._ports_by_host.get(host, {}).values()
        return [p for p in ports if physnet is None or p.physnet == physnet]

    # -- changes ------------------------------------------------------------------

    def replace(self, servers: Iterable[ServerInfo], ports: Iterable[PortInfo], at: float) -> None:
        """A full resync in one go: the cloud's listing replaces the cache."""
        fresh = Topology()
        for _ in fresh._fill(servers, ports, float("inf")):
            pass
        self._adopt(fresh, at)

    async def rebuild(
        self,
        servers: Iterable[ServerInfo],
        ports: Iterable[PortInfo],
        at: float,
        *,
        slice_s: float = 0.002,
    ) -> None:
        """``replace`` without holding the event loop: the new cache is built in
        slices of about ``slice_s``, yielding between them, while this one goes on
        answering lookups (at 500,000 servers, one go held the loop, and with it the
        heartbeats, for seconds). Then it takes over at once."""
        if self._journal is not None:
            raise RuntimeError("a topology rebuild is already running")
        fresh = Topology()
        self._journal = []
        try:
            for _ in fresh._fill(servers, ports, slice_s):
                await asyncio.sleep(0)
            for event_type, payload in self._journal:  # newer than the listing, maybe
                fresh.on_instance_notification(event_type, payload)
        finally:
            self._journal = None
        self._adopt(fresh, at)

    def _fill(
        self, servers: Iterable[ServerInfo], ports: Iterable[PortInfo], slice_s: float
    ) -> Iterator[None]:
        """Put everything; yields each time about ``slice_s`` has passed."""
        due = _slices(slice_s)
        for s in servers:
            self.put_server(s)
            if next(due):
                yield
        for p in ports:
            self.put_port(p)
            if next(due):
                yield

    def _adopt(self, fresh: Topology, at: float) -> None:
        self._servers, self._ports = fresh._servers, fresh._ports
        self._servers_by_host, self._ports_by_host = fresh._servers_by_host, fresh._ports_by_host
        self.synced_at = at

    def put_server(self, info: ServerInfo) -> None:
        _place(self._servers, self._servers_by_host, info)

    def remove_server(self, server_id: str) -> None:
        _drop(self._servers, self._servers_by_host, server_id)

    def put_port(self, info: PortInfo) -> None:
        _place(self._ports, self._ports_by_host, info)

    def remove_port(self, port_id: str) -> None:
        _drop(self._ports, self._ports_by_host, port_id)

    def on_instance_notification(self, event_type: str, payload: Mapping[str, Any]) -> bool:
        """Apply one of Nova's versioned ``instance.*`` notifications; True if it changed."""
        server_id = payload.get("uuid")
        if not isinstance(server_id, str):
            return False
        if self._journal is not None:
            self._journal.append((event_type, payload))
        if event_type == "instance.delete.end" or payload.get("state") == "deleted":
            if server_id in self._servers:
                self.remove_server(server_id)
                self.updates += 1
                return True
            return False
        if not event_type.startswith("instance."):
            return False
        old = self.server(server_id)
        metadata = payload.get("metadata")
        info = ServerInfo(
            id=server_id,
            name=str(payload.get("display_name") or (old.name if old else "")),
            project_id=str(payload.get("tenant_id") or (old.project_id if old else "")),
            host=payload.get("host") or None,
            vm_state=payload.get("state") or (old.vm_state if old else None),
            task_state=payload.get("task_state"),
            metadata=dict(metadata)
            if isinstance(metadata, dict)
            else (old.metadata if old else {}),
        )
        if info == old:
            return False
        self.put_server(info)
        self.updates += 1
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "servers": len(self._servers),
            "ports": len(self._ports),
            "hosts": len(self._servers_by_host),
            "synced_at": self.synced_at,
            "updates": self.updates,
        }

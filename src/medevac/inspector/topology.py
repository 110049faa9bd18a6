"""The inspector's cache of which servers and ports live on which host.

Kept current from Nova's versioned notifications and a periodic full resync (Doctor's
guideline), so on the fault path a host's servers and ports are a dictionary lookup,
never an API listing. Also updated by the inspector's own actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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


class Topology:
    """host -> servers and host -> ports, with O(1) lookups and moves."""

    def __init__(self) -> None:
        self.servers: dict[str, ServerInfo] = {}
        self.ports: dict[str, PortInfo] = {}
        self._servers_by_host: dict[str, dict[str, ServerInfo]] = {}
        self._ports_by_host: dict[str, dict[str, PortInfo]] = {}
        self.synced_at: float | None = None
        self.updates = 0  # incremental changes applied since start

    # -- lookups ------------------------------------------------------------------

    def servers_on(self, host: str) -> list[ServerInfo]:
        return list(self._servers_by_host.get(host, {}).values())

    def ports_on(self, host: str, physnet: str | None = None) -> list[PortInfo]:
        ports = self._ports_by_host.get(host, {}).values()
        return [p for p in ports if physnet is None or p.physnet == physnet]

    # -- changes ------------------------------------------------------------------

    def replace(self, servers: Iterable[ServerInfo], ports: Iterable[PortInfo], at: float) -> None:
        """A full resync: the cloud's listing replaces the cache."""
        self.servers, self.ports = {}, {}
        self._servers_by_host, self._ports_by_host = {}, {}
        for s in servers:
            self.put_server(s)
        for p in ports:
            self.put_port(p)
        self.synced_at = at

    def put_server(self, info: ServerInfo) -> None:
        old = self.servers.get(info.id)
        if old is not None and old.host != info.host and old.host is not None:
            self._servers_by_host.get(old.host, {}).pop(info.id, None)
        self.servers[info.id] = info
        if info.host is not None:
            self._servers_by_host.setdefault(info.host, {})[info.id] = info

    def remove_server(self, server_id: str) -> None:
        old = self.servers.pop(server_id, None)
        if old is not None and old.host is not None:
            self._servers_by_host.get(old.host, {}).pop(server_id, None)

    def put_port(self, info: PortInfo) -> None:
        old = self.ports.get(info.id)
        if old is not None and old.host != info.host and old.host is not None:
            self._ports_by_host.get(old.host, {}).pop(info.id, None)
        self.ports[info.id] = info
        if info.host is not None:
            self._ports_by_host.setdefault(info.host, {})[info.id] = info

    def on_instance_notification(self, event_type: str, payload: Mapping[str, Any]) -> bool:
        """Apply one of Nova's versioned ``instance.*`` notifications; True if it changed."""
        server_id = payload.get("uuid")
        if not isinstance(server_id, str):
            return False
        if event_type == "instance.delete.end" or payload.get("state") == "deleted":
            if server_id in self.servers:
                self.remove_server(server_id)
                self.updates += 1
                return True
            return False
        if not event_type.startswith("instance."):
            return False
        old = self.servers.get(server_id)
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
            "servers": len(self.servers),
            "ports": len(self.ports),
            "hosts": len(self._servers_by_host),
            "synced_at": self.synced_at,
            "updates": self.updates,
        }

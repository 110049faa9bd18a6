"""Async cloud driver over openstacksdk.

openstacksdk gives us clouds.yaml, Keystone auth, endpoint discovery and the compute
API's microversion range; the calls themselves are plain REST through its service
adapters so that each one pins the exact microversion whose contract it relies on
(for example the 2.53 form of force-down, which the SDK's helper does not send).
Blocking calls run in a bounded thread pool; each has a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import openstack
import openstack.config
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1.session import TCPKeepAliveAdapter

from medevac.cloud.errors import (
    CloudError,
    CloudUnavailable,
    ComputeServiceInUse,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from medevac.cloud.models import ComputeService, DataPlaneStatus, Port, Server

log = logging.getLogger(__name__)

T = TypeVar("T")
Microversion = tuple[int, int]

COMPUTE_BINARY = "nova-compute"
LIST_TIMEOUT = 300.0  # one page of a full listing (s)
_ID = re.compile(r"/[0-9a-fA-F-]{32,36}(?=/|$)")  # a UUID path segment


def call_name(service: str, method: str, url: str) -> str:
    """How a call is counted: ``compute POST /servers/{id}/action``."""
    return f"{service} {method} {_ID.sub('/{id}', url)}"


# Evacuated servers keep their power state up to 2.94; from 2.95 they end STOPPED,
# which is not what an HA restart wants.
EVACUATE_MAX = (2, 94)
SERVERS_MAX = (2, 100)
# Live migration: ``block_migration: "auto"`` from 2.25 (Nova chooses shared or block
# storage); ``force`` (2.30-2.67) is never sent, so the scheduler checks a named host.
LIVE_MIGRATE_AUTO = (2, 25)
LIVE_MIGRATE_MAX = (2, 67)


def _mv(v: Microversion) -> str:
    return f"{v[0]}.{v[1]}"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _service(s: dict[str, Any]) -> ComputeService:
    return ComputeService(
        id=str(s["id"]),
        host=s["host"],
        binary=s["binary"],
        zone=s.get("zone", ""),
        status=s["status"],
        state=s["state"],
        forced_down=bool(s.get("forced_down", False)),
        updated_at=_parse_time(s.get("updated_at")),
        disabled_reason=s.get("disabled_reason"),
    )


def _error_message(body: Any, fallback: str) -> str:
    """Pull the human message out of Nova's or Neutron's error envelope."""
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
        if "message" in body:
            return str(body["message"])
    return fallback


def _raise_for(status: int, body: Any, operation: str) -> None:
    msg = _error_message(body, f"HTTP {status}")
    if status == 400:
        if "is still in use" in msg:
            raise ComputeServiceInUse(msg, status=status, operation=operation)
        raise InvalidRequest(msg, status=status, operation=operation)
    if status in (401, 403):
        raise Forbidden(msg, status=status, operation=operation)
    if status == 404:
        raise NotFound(msg, status=status, operation=operation)
    if status == 409:
        raise Conflict(msg, status=status, operation=operation)
    if status >= 500 or status == 429:
        raise CloudUnavailable(msg, status=status, operation=operation)
    raise CloudError(msg, status=status, operation=operation)


class _Claim:
    """A call's hold on a worker thread: taken by a worker, or given up by its caller
    before any worker took it, never both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: float | None = None
        self._abandoned = False

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._abandoned:
                raise CloudUnavailable("abandoned before a worker took it")
            self._started = time.monotonic()
        return fn()

    def started_at(self) -> float | None:
        """When a worker took it; None (and it never will) if none has yet."""
        with self._lock:
            if self._started is None:
                self._abandoned = True
            return self._started


class CloudDriver:
    """Nova and Neutron operations medevac needs, as async methods with typed errors."""

    def __init__(
        self,
        cloud: str,
        *,
        clouds_yaml: Path | None = None,
        max_workers: int = 16,
        call_timeout: float = 30.0,
        compute_microversion_cap: Microversion | None = None,
    ) -> None:
        """``compute_microversion_cap`` keeps calls at or below a version (old clouds)."""
        self.cloud = cloud
        self._cap = compute_microversion_cap
        self._clouds_yaml = clouds_yaml
        self._timeout = call_timeout
        # A page of a big cloud's listing (1000 servers with their details) can take a
        # loaded Nova longer than one call's deadline; abandoning it wastes the work
        # the cloud goes on doing, and the next try fails the same way.
        self._list_timeout = max(call_timeout, LIST_TIMEOUT)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="cloud")
        self._max_workers = max_workers
        self._conn: Any = None
        self._compute_max: Microversion | None = None
        # host -> compute service id, learnt from every listing: the 2.53 force-down
        # then costs one call on the fault path instead of three.
        self._service_ids: dict[str, str] = {}
        # Calls made, by service, method and path with its ids elided: what medevac
        # costs the cloud, readable on /v1/inspector.
        self.calls: Counter[str] = Counter()
        # Their results by service: ok, client_error (4xx), server_error (5xx), or
        # no_answer (no connection, a timeout), for the metrics.
        self.results: Counter[tuple[str, str]] = Counter()
        self._calls_lock = threading.Lock()  # counted from the worker threads

    # -- plumbing -----------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is None:
            try:
                files = [str(self._clouds_yaml)] if self._clouds_yaml else None
                cfg = openstack.config.OpenStackConfig(config_files=files)
                region = cfg.get_one(cloud=self.cloud)
            except Exception as exc:  # the SDK raises several unrelated types here
                raise CloudError(f"cannot load cloud {self.cloud!r}: {exc}") from None
            conn = openstack.connection.Connection(config=region)
            # A kept-alive connection per worker thread: with requests' default pool
            # of 10, a burst of 16 calls (a host's resets and ports) closed and
            # reopened connections to the same endpoint on every call past the 10th.
            adapter = TCPKeepAliveAdapter(pool_maxsize=self._max_workers)
            for scheme in ("http://", "https://"):
                conn.session.mount(scheme, adapter)
            # The socket timeout of calls made outside ``_request`` (version discovery,
            # authentication): the SDK's default is none.
            conn.session.timeout = self._timeout
            self._conn = conn
        return self._conn

    async def _run(self, operation: str, fn: Callable[[], T], within: float | None = None) -> T:
        """``fn`` in a worker thread. Its deadline counts from when a worker takes it:
        a call queued behind others was not slow, the cloud never saw it. The wait for
        a worker has the same bound, and a call that got none is never sent later."""
        loop = asyncio.get_running_loop()
        deadline = within or self._timeout
        claim = _Claim()
        future = loop.run_in_executor(self._pool, claim.run, fn)
        try:
            remaining = deadline
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(future), timeout=remaining)
                except TimeoutError:
                    started = claim.started_at()
                    if started is None:
                        raise CloudUnavailable(
                            f"not sent: all {self._max_workers} cloud workers busy for "
                            f"{deadline:g} s",
                            operation=operation,
                        ) from None
                    remaining = started + deadline - time.monotonic()
                    if remaining <= 0:
                        raise CloudUnavailable(
                            f"no answer within {deadline:g} s", operation=operation
                        ) from None
        except ksa_exc.ConnectFailure as exc:
            raise CloudUnavailable(f"cannot connect: {exc}", operation=operation) from None
        except (ksa_exc.ConnectTimeout, ksa_exc.EndpointNotFound) as exc:
            raise CloudUnavailable(str(exc), operation=operation) from None
        except ksa_exc.DiscoveryFailure as exc:
            # Version discovery is the first request to an endpoint: a dead one ends here.
            raise CloudUnavailable(
                f"endpoint discovery failed: {exc}", operation=operation
            ) from None
        finally:
            if not future.done():
                future.cancel()  # an abandoned call is not waited for

    def _request(
        self,
        service: str,
        method: str,
        url: str,
        operation: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        microversion: Microversion | None = None,
        timeout: float | None = None,
    ) -> Any:
        adapter = getattr(self._connect(), service)
        with self._calls_lock:
            self.calls[call_name(service, method, url)] += 1
        kwargs: dict[str, Any] = {"raise_exc": False}
        if json is not None:
            kwargs["json"] = json
        if params:
            kwargs["params"] = params
        if microversion is not None:
            kwargs["microversion"] = _mv(microversion)
        # The socket's own timeout frees this worker from a cloud that went silent
        # (the SDK sets none): otherwise every worker could hang on one such cloud.
        try:
            resp = adapter.request(url, method, timeout=timeout, **kwargs)
        except Exception:
            self._result(service, "no_answer")
            raise
        status = resp.status_code
        self._result(
            service, "ok" if status < 400 else "client_error" if status < 500 else "server_error"
        )
        body: Any = None
        if resp.content:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
        if status >= 400:
            _raise_for(status, body, operation)
        return body

    def _result(self, service: str, result: str) -> None:
        with self._calls_lock:
            self.results[service, result] += 1

    def call_results(self) -> dict[tuple[str, str], int]:
        """Calls made so far by (service, result), copied while no worker counts."""
        with self._calls_lock:
            return dict(self.results)

    async def _call(
        self,
        service: str,
        method: str,
        url: str,
        operation: str,
        within: float | None = None,
        **kw: Any,
    ) -> Any:
        """One REST call in a worker thread; ``within`` overrides the call deadline."""
        deadline = within or self._timeout
        return await self._run(
            operation,
            functools.partial(
                self._request, service, method, url, operation, timeout=deadline, **kw
            ),
            within,
        )

    async def compute_max_microversion(self) -> Microversion:
        """The newest compute microversion the cloud offers (from discovery, cached)."""
        if self._compute_max is None:

            def discover() -> Microversion:
                data = self._connect().compute.get_endpoint_data()
                mx = data.max_microversion if data else None
                if not mx:
                    return (2, 1)
                return (int(mx[0]), int(mx[1]))

            found = await self._run("compute discovery", discover)
            self._compute_max = min(found, self._cap) if self._cap else found
        return self._compute_max

    async def _compute_mv(self, wanted: Microversion) -> Microversion:
        return min(wanted, await self.compute_max_microversion())

    # -- compute services ---------------------------------------------------------

    async def list_compute_services(self, host: str | None = None) -> list[ComputeService]:
        """The nova-compute services (all, or one host's) with Nova's view of them."""
        mv = await self._compute_mv((2, 53))
        params = {"binary": COMPUTE_BINARY}
        if host:
            params["host"] = host
        body = await self._call(
            "compute", "GET", "/os-services", "list services", params=params, microversion=mv
        )
        services = [_service(s) for s in body.get("services", [])]
        for svc in services:
            self._service_ids[svc.host] = svc.id
        return services

    async def get_compute_service(self, host: str) -> ComputeService:
        services = await self.list_compute_services(host)
        if not services:
            raise NotFound(f"no nova-compute service on host {host!r}", status=404)
        return services[0]

    async def set_forced_down(self, host: str, forced_down: bool = True) -> ComputeService:
        """Force the host's compute service down (or release it): 2.53 form, else 2.11."""
        op = f"force-{'down' if forced_down else 'up'} {host}"
        mv = await self.compute_max_microversion()
        if mv >= (2, 53):
            for attempt in range(2):
                service_id = self._service_ids.get(host)
                if service_id is None or attempt:
                    service_id = (await self.get_compute_service(host)).id
                try:
                    body = await self._call(
                        "compute",
                        "PUT",
                        f"/os-services/{service_id}",
                        op,
                        json={"forced_down": forced_down},
                        microversion=(2, 53),
                    )
                except NotFound:
                    if attempt:
                        raise
                    continue  # the service was re-created since we learnt its id
                return _service(body["service"])
        elif mv >= (2, 11):
            await self._call(
                "compute",
                "PUT",
                "/os-services/force-down",
                op,
                json={"host": host, "binary": COMPUTE_BINARY, "forced_down": forced_down},
                microversion=(2, 11),
            )
            return await self.get_compute_service(host)
        raise CloudError("the cloud's compute API is older than 2.11", operation=op)

    async def set_enabled(
        self, host: str, enabled: bool, reason: str | None = None
    ) -> ComputeService:
        """Enable or disable the host's compute service for scheduling, with a reason."""
        op = f"{'enable' if enabled else 'disable'} {host}"
        mv = await self.compute_max_microversion()
        if mv >= (2, 53):
            svc = await self.get_compute_service(host)
            body: dict[str, Any] = {"status": "enabled" if enabled else "disabled"}
            if not enabled and reason:
                body["disabled_reason"] = reason
            await self._call(
                "compute", "PUT", f"/os-services/{svc.id}", op, json=body, microversion=(2, 53)
            )
        else:
            action = "enable" if enabled else ("disable-log-reason" if reason else "disable")
            body = {"host": host, "binary": COMPUTE_BINARY}
            if not enabled and reason:
                body["disabled_reason"] = reason
            await self._call("compute", "PUT", f"/os-services/{action}", op, json=body)
        return await self.get_compute_service(host)

    # -- servers ------------------------------------------------------------------

    async def list_host_servers(self, host: str) -> list[Server]:
        """Every server on a host, across all projects, following Nova's pagination."""
        return await self.list_servers(host)

    async def list_servers(self, host: str | None = None) -> list[Server]:
        """Every server (or one host's), across all projects, following pagination."""
        mv = await self._compute_mv(SERVERS_MAX)
        servers: list[Server] = []
        marker: str | None = None
        where = f"on {host}" if host else "in the cloud"
        while True:
            params = {"all_tenants": "1", "limit": "1000"}
            if host:
                params["host"] = host
            if marker:
                params["marker"] = marker
            body = await self._call(
                "compute",
                "GET",
                "/servers/detail",
                f"list servers {where}",
                self._list_timeout,
                params=params,
                microversion=mv,
            )
            page = body.get("servers", [])
            servers.extend(Server.from_api(s) for s in page)
            has_next = any(link.get("rel") == "next" for link in body.get("servers_links", []))
            if not page or not has_next:
                return servers
            marker = page[-1]["id"]

    async def get_server(self, server_id: str) -> Server:
        mv = await self._compute_mv(SERVERS_MAX)
        body = await self._call(
            "compute", "GET", f"/servers/{server_id}", f"get server {server_id}", microversion=mv
        )
        return Server.from_api(body["server"])

    async def _server_action(
        self, server_id: str, action: dict[str, Any], what: str, mv: Microversion | None = None
    ) -> None:
        await self._call(
            "compute",
            "POST",
            f"/servers/{server_id}/action",
            f"{what} server {server_id}",
            json=action,
            microversion=mv,
        )

    async def reset_state(self, server_id: str, state: str = "error") -> None:
        """Set vm_state (error or active) and clear task_state; Nova answers 202."""
        if state not in ("error", "active"):
            raise ValueError(f"reset-state takes 'error' or 'active', not {state!r}")
        await self._server_action(server_id, {"os-resetState": {"state": state}}, "reset-state")

    async def evacuate(
        self, server_id: str, host: str | None = None, on_shared_storage: bool = False
    ) -> None:
        """Rebuild the server on another host (Nova picks one unless ``host`` is given)."""
        mv = await self._compute_mv(EVACUATE_MAX)
        body: dict[str, Any] = {}
        if host:
            body["host"] = host
        if mv < (2, 14):
            body["onSharedStorage"] = on_shared_storage
        await self._server_action(server_id, {"evacuate": body}, "evacuate", mv)

    async def live_migrate(self, server_id: str, host: str | None = None) -> None:
        """Move a running server to another host while it runs (Nova's scheduler picks
        one unless ``host`` is given); Nova answers 202 with the task set to
        ``migrating``, and puts it back where it was if the migration fails."""
        mv = await self._compute_mv(LIVE_MIGRATE_MAX)
        body: dict[str, Any] = {"host": host}
        if mv >= LIVE_MIGRATE_AUTO:
            body["block_migration"] = "auto"
        else:
            body |= {"block_migration": False, "disk_over_commit": False}
        await self._server_action(server_id, {"os-migrateLive": body}, "live-migrate", mv)

    async def stop_server(self, server_id: str) -> None:
        await self._server_action(server_id, {"os-stop": None}, "stop")

    async def start_server(self, server_id: str) -> None:
        await self._server_action(server_id, {"os-start": None}, "start")

    async def reboot_server(self, server_id: str, hard: bool = True) -> None:
        kind = "HARD" if hard else "SOFT"
        await self._server_action(server_id, {"reboot": {"type": kind}}, f"{kind.lower()} reboot")

    # -- ports --------------------------------------------------------------------

    async def list_host_ports(self, host: str) -> list[Port]:
        """Every port bound to a host (``binding:host_id``)."""
        return await self.list_ports(host)

    async def list_server_ports(self, server_id: str) -> list[Port]:
        """The ports attached to one server (``device_id``)."""
        body = await self._call(
            "network",
            "GET",
            "/ports",
            f"list ports of server {server_id}",
            params={"device_id": server_id},
        )
        return [Port.from_api(p) for p in body.get("ports", [])]

    async def list_ports(self, host: str | None = None) -> list[Port]:
        """Every port (or those bound to one host), following Neutron's pagination."""
        ports: list[Port] = []
        marker: str | None = None
        where = f"on {host}" if host else "in the cloud"
        while True:
            params = {"limit": "1000"}
            if host:
                params["binding:host_id"] = host
            if marker:
                params["marker"] = marker
            body = await self._call(
                "network", "GET", "/ports", f"list ports {where}", self._list_timeout, params=params
            )
            page = body.get("ports", [])
            ports.extend(Port.from_api(p) for p in page)
            has_next = any(link.get("rel") == "next" for link in body.get("ports_links", []))
            if not page or not has_next:
                return ports
            marker = page[-1]["id"]

    async def network_physnets(self) -> dict[str, str | None]:
        """Each network's provider physical network (None for overlays), by network id."""
        body = await self._call(
            "network",
            "GET",
            "/networks",
            "list networks",
            params={"fields": ["id", "provider:physical_network"]},
        )
        return {n["id"]: n.get("provider:physical_network") for n in body.get("networks", [])}

    async def get_port(self, port_id: str) -> Port:
        body = await self._call("network", "GET", f"/ports/{port_id}", f"get port {port_id}")
        return Port.from_api(body["port"])

    async def set_data_plane_status(self, port_id: str, status: DataPlaneStatus | None) -> Port:
        """Set a port's data_plane_status to ACTIVE or DOWN, or unset it (None)."""
        body = await self._call(
            "network",
            "PUT",
            f"/ports/{port_id}",
            f"set data_plane_status {status.value if status else 'unset'} on port {port_id}",
            json={"port": {"data_plane_status": status.value if status else None}},
        )
        return Port.from_api(body["port"])

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

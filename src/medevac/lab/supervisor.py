"""The lab supervisor: one background process that owns a whole lab.

It starts real Nova + Placement and real Neutron (each in its own process, in the
lab venv), provisions networks, servers and ports through their APIs, serves one
emulated IPMI BMC per host, writes a clouds.yaml and a controller configuration,
and exposes a small control API for fault injection. ``medevac lab up`` starts it
in a new session (process group) so ``lab down`` can stop everything at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from medevac.lab import partition
from medevac.lab.agents import LabAgents
from medevac.lab.bmcs import LabBmcs
from medevac.lab.control_api import control_app
from medevac.lab.controller_faults import ControllerFaults
from medevac.lab.fault_injection import FaultInjector, wall_clock
from medevac.lab.generated_config import (
    CLOUD_NAME,
    ClusterSetup,
    ControllerAccess,
    member_id,
    write_clouds_yaml,
    write_controller_config,
)
from medevac.lab.identity import IDENTITIES, KeystoneSetup, SignIn, lab_users, seed
from medevac.lab.layout import PROJECTS, LabError, LabPaths, write_json_atomic
from medevac.lab.openstack_services import OpenStackServices
from medevac.lab.ports import free_port
from medevac.lab.provisioning import boot_servers, create_networks, server_plan

log = logging.getLogger("medevac.lab")
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class LabSpec:
    hosts: int = 3
    servers_per_host: int = 2
    layout: tuple[int, ...] | None = None  # servers per host, overriding the two above
    report_interval: float = 1.0
    service_down_time: int = 5
    transport_url: str | None = None
    redfish: tuple[str, ...] = ()  # hosts whose BMC speaks Redfish instead of IPMI
    controllers: int = 1  # several: on a shared PostgreSQL store and a Redis group
    storage_url: str | None = None  # their store (lab up creates the database)
    group: str | None = None  # their coordination group
    identity: str = "static"  # or "keystone": a real Keystone, and tokens from it

    def servers_on_each_host(self) -> list[int]:
        if self.layout:
            return list(self.layout)
        return [self.servers_per_host] * self.hosts


class Lab:
    """Everything one lab runs: Nova and Neutron, the BMCs, the agents, and the fault
    model that drives them."""

    def __init__(self, paths: LabPaths, spec: LabSpec) -> None:
        self.paths = paths
        self.spec = spec
        self.host_names = [f"host{i + 1}" for i in range(len(spec.servers_on_each_host()))]
        self.services = OpenStackServices(paths)
        self.bmcs = LabBmcs()
        self.faults = FaultInjector(
            paths, self.host_names, self.services, self.bmcs, on_change=self._faults_changed
        )
        self.controller = ControllerAccess.for_controllers(spec.controllers)
        self.cluster: ClusterSetup | None = None
        if spec.controllers > 1:
            if not spec.storage_url or not spec.group:
                raise LabError("several controllers need a storage URL and a group")
            self.cluster = ClusterSetup(spec.storage_url, spec.group)
        self.control_port = free_port()
        # Every agent heartbeats to every controller.
        self.agents = LabAgents(
            self.faults, [hb for _, hb in self.controller.ports], self.controller.agent_key
        )
        self.configs: list[Path] = []
        self.tag = partition.lab_tag(paths.root)  # its controller-partition rules
        self.keystone_port = free_port() if spec.identity == "keystone" else None
        self.keystone: KeystoneSetup | None = None

    def _faults_changed(self) -> None:
        self.agents.changed()

    async def start(self) -> None:
        t0 = time.monotonic()
        # A lab of this state dir that crashed may have left a controller cut off.
        if stale := await asyncio.to_thread(partition.clean, self.tag):
            log.warning("removed %d firewall rules and cgroups a previous lab left", stale)
        await self.services.start(
            self.host_names,
            report_interval=self.spec.report_interval,
            service_down_time=self.spec.service_down_time,
            transport_url=self.spec.transport_url,
            keystone_port=self.keystone_port,
        )
        log.info("nova and neutron ready in %.1f s", time.monotonic() - t0)
        nova_url, neutron_url = self.services.nova["api_url"], self.services.neutron["url"]
        projects: list[str] = list(PROJECTS)
        if self.keystone_port is not None:
            self.keystone = await asyncio.to_thread(self._seed_keystone)
            projects = [self.keystone.projects[p] for p in PROJECTS]
            # Nova and Neutron take Keystone's tokens only: the supervisor's calls too.
            self.services.sign_in = SignIn(self.keystone).token
            # The tenants are Keystone's projects: servers and member tokens use their ids.
            self.controller = dataclasses.replace(
                self.controller,
                project_tokens={
                    self.keystone.projects[p]: t for p, t in self.controller.project_tokens.items()
                },
            )
            log.info("keystone seeded in %.1f s", time.monotonic() - t0)
        write_clouds_yaml(self.paths, self.control_port, nova_url, neutron_url, self.keystone)
        networks = await asyncio.to_thread(create_networks, self.services)
        plan = server_plan(self.host_names, self.spec.servers_on_each_host(), projects)
        self.faults.servers = await asyncio.to_thread(boot_servers, self.services, plan, networks)
        log.info(
            "%d servers on %d hosts ready in %.1f s",
            len(self.faults.servers),
            len(self.host_names),
            time.monotonic() - t0,
        )
        self.bmcs.start(self.host_names, self.spec.redfish, self.faults)
        notifications = self.services.nova.get("notifications")
        self.configs = write_controller_config(
            self.paths,
            self.controller,
            self.bmcs.specs,
            set(self.bmcs.redfish),
            self.spec.transport_url if notifications else None,
            self.cluster,
            self.keystone,
        )
        if self.cluster is not None:
            self.faults.controllers = ControllerFaults(
                self.controllers(), self.controller.admin_token, self.tag
            )
        self.agents.start()

    def _seed_keystone(self) -> KeystoneSetup:
        """Projects, users and the catalog in the lab's fresh Keystone."""
        info = self.services.keystone
        assert info is not None
        users = lab_users()
        catalog = {
            "compute": ("nova", self.services.nova["api_url"]),
            "network": ("neutron", self.services.neutron["url"]),
            "alarming": ("medevac", f"http://127.0.0.1:{self.controller.controller_port}"),
            # As devstack registers Masakari: the project's id in the path.
            "instance-ha": (
                "medevac-masakari",
                f"http://127.0.0.1:{self.controller.controller_port}/instance-ha/v1/$(project_id)s",
            ),
        }
        projects = seed(info["auth_url"], info["admin_password"], users, catalog)
        return KeystoneSetup(info["auth_url"], users, projects)

    def controllers(self) -> list[dict[str, Any]]:
        """Each controller `lab up` configured: its member id, API, configuration."""
        return [
            {
                "member_id": member_id(i) if self.cluster is not None else None,
                "url": f"http://127.0.0.1:{api}",
                "heartbeat_port": hb,
                "config": str(config),
            }
            for i, ((api, hb), config) in enumerate(
                zip(self.controller.ports, self.configs, strict=True), start=1
            )
        ]

    def stop(self) -> None:
        if self.faults.controllers is not None:
            self.faults.controllers.resume_all()
            partition.clean(self.tag)
        self.agents.stop()
        self.bmcs.stop()
        self.faults.stop()
        self.services.stop()


async def run(paths: LabPaths, spec: LabSpec) -> None:
    lab = Lab(paths, spec)
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    server: uvicorn.Server | None = None
    serve_task: asyncio.Task[None] | None = None
    try:
        starting = asyncio.create_task(lab.start())
        stopper = asyncio.create_task(shutdown.wait())
        done, _ = await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if starting not in done:
            starting.cancel()
            return
        starting.result()
        port = lab.control_port
        server = uvicorn.Server(
            uvicorn.Config(
                control_app(lab, shutdown),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
            )
        )
        serve_task = asyncio.create_task(server.serve())
        while not server.started:
            if serve_task.done():
                serve_task.result()
                raise LabError("control API stopped while starting")
            await asyncio.sleep(0.02)
        write_json_atomic(
            paths.info,
            {
                "pid": os.getpid(),
                "control_url": f"http://127.0.0.1:{port}",
                "nova_url": lab.services.nova["api_url"],
                "neutron_url": lab.services.neutron["url"],
                "cloud": CLOUD_NAME,
                "clouds_yaml": str(paths.clouds_yaml),
                "controller_config": str(lab.configs[0]),
                "controller_url": f"http://127.0.0.1:{lab.controller.controller_port}",
                "controllers": lab.controllers(),
                "storage_url": lab.cluster.storage_url if lab.cluster else None,
                "group": lab.cluster.group if lab.cluster else None,
                "admin_token": lab.controller.admin_token,
                "hosts": lab.host_names,
                "servers": len(lab.faults.servers),
                "notifications": bool(lab.services.nova.get("notifications")),
                "started_at": wall_clock()[1],
                "identity": spec.identity,
                "keystone": lab.keystone.as_dict() if lab.keystone else None,
            },
            mode=0o600,
        )
        log.info("lab ready: control API on port %d", port)
        await shutdown.wait()
    finally:
        if server is not None:
            server.should_exit = True
        if serve_task is not None:
            with contextlib.suppress(Exception):
                await serve_task
        await asyncio.to_thread(lab.stop)
        paths.info.unlink(missing_ok=True)
        log.info("lab stopped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run a medevac lab in the foreground.")
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--servers-per-host", type=int, default=2)
    p.add_argument("--layout", default=None, help="servers per host, e.g. 100,50,10,1,0")
    p.add_argument("--report-interval", type=float, default=1.0)
    p.add_argument("--service-down-time", type=int, default=5)
    p.add_argument("--transport-url", default=None)
    p.add_argument("--redfish", default="", help="hosts with a Redfish BMC, e.g. host2,host3")
    p.add_argument("--controllers", type=int, default=1)
    p.add_argument("--storage-url", default=None, help="the controllers' store (several)")
    p.add_argument("--group", default=None, help="the controllers' group (several)")
    p.add_argument("--identity", choices=IDENTITIES, default="static")
    args = p.parse_args(argv)
    paths = LabPaths(args.state_dir)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec = LabSpec(
        hosts=args.hosts,
        servers_per_host=args.servers_per_host,
        layout=tuple(int(n) for n in args.layout.split(",")) if args.layout else None,
        report_interval=args.report_interval,
        service_down_time=args.service_down_time,
        transport_url=args.transport_url,
        redfish=tuple(h for h in args.redfish.split(",") if h),
        controllers=args.controllers,
        storage_url=args.storage_url,
        group=args.group,
        identity=args.identity,
    )
    try:
        asyncio.run(run(paths, spec))
    except LabError as exc:
        log.error("lab failed: %s", exc)
        write_json_atomic(paths.root / "failed.json", {"error": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

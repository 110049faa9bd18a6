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
import copy
import functools
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from medevac.agent.agent import Agent, AgentConfig
from medevac.lab.bmc_emulator import BmcFarm, BmcSpec
from medevac.lab.control_api import control_app
from medevac.lab.faults import FaultError, FaultKind, HostFaults
from medevac.lab.layout import (
    PHYSNETS,
    PROJECTS,
    SERVICES_DIR,
    LabError,
    LabPaths,
    find_lab_python,
    write_json_atomic,
    write_text_atomic,
)
from medevac.lab.redfish_emulator import RedfishBmc
from medevac.monitor.protocol import Checks

log = logging.getLogger("medevac.lab")
logging.getLogger("httpx").setLevel(logging.WARNING)

CLOUD_NAME = "medevac-lab"
BMC_USER = "admin"
SERVICE_START_TIMEOUT = 120.0
BOOT_BATCH = 5  # servers in flight at once; Nova's fixtures serialise writes anyway
BOOT_ATTEMPTS = 3


@dataclass
class LabSpec:
    hosts: int = 3
    servers_per_host: int = 2
    layout: tuple[int, ...] | None = None  # servers per host, overriding the two above
    report_interval: float = 1.0
    service_down_time: int = 5
    transport_url: str | None = None
    redfish: tuple[str, ...] = ()  # hosts whose BMC speaks Redfish instead of IPMI


class LabProbes:
    """The agent's local checks in the lab: read from the fault model."""

    def __init__(self, lab: Lab, host: str) -> None:
        self._lab = lab
        self._host = host

    def checks(self) -> Checks:
        return self._lab.probe(self._host)


@dataclass
class ChildService:
    name: str
    process: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free now (TCP by default), below the kernel's
    ephemeral range: a port chosen here may stay unbound for a long time (the
    controller's, until `medevac serve` starts), and any socket bound to port 0 (an
    agent, a BMC, another lab's service) could otherwise be given it meanwhile."""
    top = _ephemeral_floor()
    for _ in range(200):
        port = secrets.randbelow(top - 20000) + 20000
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LabError("no free port on 127.0.0.1 below the ephemeral range")


def _now() -> tuple[float, str]:
    t = time.time()
    return t, datetime.fromtimestamp(t, UTC).isoformat()


class Lab:
    """Everything one lab runs, and the fault model that drives it."""

    def __init__(self, paths: LabPaths, spec: LabSpec) -> None:
        self.paths = paths
        self.spec = spec
        hosts = len(spec.layout) if spec.layout else spec.hosts
        self.host_names = [f"host{i + 1}" for i in range(hosts)]
        self.hosts = {h: HostFaults(h, PHYSNETS) for h in self.host_names}
        self.servers: dict[str, dict[str, Any]] = {}  # id -> {host, name, project, port}
        self.crashed_servers: set[str] = set()
        self.children: dict[str, ChildService] = {}
        self.farm: BmcFarm | None = None
        self.redfish: dict[str, RedfishBmc] = {}
        self.bmcs: dict[str, BmcSpec] = {}
        # The fault model is touched from API threads and the BMC thread: model_lock is
        # held only briefly; reconcile_lock orders the (slow) calls into Nova.
        self.model_lock = threading.Lock()
        self.reconcile_lock = threading.Lock()
        self._booted = dict.fromkeys(self.host_names, 0)
        self._reconciler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self.http = httpx.Client(timeout=60.0)
        self.admin_token = secrets.token_urlsafe(24)
        self.reader_token = secrets.token_urlsafe(24)
        self.project_tokens = {p: secrets.token_urlsafe(24) for p in PROJECTS}
        self.controller_port = free_port()
        self.control_port = free_port()
        self.heartbeat_port = free_port(socket.SOCK_DGRAM)
        self.agent_key = secrets.token_hex(32).encode()
        self.agents: dict[str, tuple[Agent, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- child services -----------------------------------------------------------

    def _spawn(self, name: str, script: str, args: list[str]) -> ChildService:
        ready = self.paths.service_file(name)
        ready.unlink(missing_ok=True)
        cmd = [
            str(find_lab_python()),
            str(SERVICES_DIR / script),
            "--ready-file",
            str(ready),
            "--log-file",
            str(self.paths.service_log(name)),
            *args,
        ]
        out = self.paths.service_log(name + "-stdout").open("ab")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        child = ChildService(name, proc)
        self.children[name] = child
        return child

    async def _wait_ready(self, child: ChildService) -> dict[str, Any]:
        ready = self.paths.service_file(child.name)
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise LabError(
                    f"{child.name} exited with code {child.process.returncode} while starting; "
                    f"see {self.paths.service_log(child.name)}"
                )
            if ready.exists():
                with contextlib.suppress(json.JSONDecodeError):
                    info: dict[str, Any] = json.loads(ready.read_text())
                    child.info = info
                    return info
            await asyncio.sleep(0.05)
        raise LabError(f"{child.name} was not ready within {SERVICE_START_TIMEOUT:.0f} s")

    @property
    def nova(self) -> dict[str, Any]:
        return self.children["nova"].info

    @property
    def neutron(self) -> dict[str, Any]:
        return self.children["neutron"].info

    # -- start --------------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.monotonic()
        nova_args = [
            "--hosts",
            ",".join(self.host_names),
            "--report-interval",
            str(self.spec.report_interval),
            "--service-down-time",
            str(self.spec.service_down_time),
        ]
        if self.spec.transport_url:
            nova_args += ["--transport-url", self.spec.transport_url]
        neutron_db = self.paths.root / "neutron.sqlite"
        neutron_db.unlink(missing_ok=True)  # every lab starts from an empty cloud
        nova = self._spawn("nova", "nova_service.py", nova_args)
        neutron = self._spawn(
            "neutron",
            "neutron_service.py",
            ["--physnets", ",".join(PHYSNETS), "--db", str(neutron_db)],
        )
        await asyncio.gather(self._wait_ready(nova), self._wait_ready(neutron))
        log.info("nova and neutron ready in %.1f s", time.monotonic() - t0)
        self._write_clouds_yaml()
        networks = await asyncio.to_thread(self._create_networks)
        await asyncio.to_thread(self._boot_servers, networks)
        log.info(
            "%d servers on %d hosts ready in %.1f s",
            len(self.servers),
            len(self.hosts),
            time.monotonic() - t0,
        )
        self._start_bmcs()
        self._write_controller_config()
        self._loop = asyncio.get_running_loop()
        self._sync_agents()

    def _nova_req(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        mv: str = "2.74",
        project: str | None = None,
    ) -> Any:
        token = f"lab-project-{project}" if project else "lab-admin"
        resp = self.http.request(
            method,
            self.nova["api_url"] + path,
            json=json_body,
            headers={"X-Auth-Token": token, "OpenStack-API-Version": f"compute {mv}"},
        )
        if resp.status_code >= 400:
            raise LabError(f"nova {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def _neutron_req(self, method: str, path: str, json_body: Any = None) -> Any:
        resp = self.http.request(
            method,
            self.neutron["url"] + "/v2.0" + path,
            json=json_body,
            headers={"X-Auth-Token": "lab-admin"},
        )
        if resp.status_code >= 400:
            raise LabError(f"neutron {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def _control(self, method: str, path: str, json_body: Any = None) -> Any:
        resp = self.http.request(method, self.nova["control_url"] + path, json=json_body)
        if resp.status_code >= 400:
            raise LabError(f"nova control {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def _create_networks(self) -> dict[str, str]:
        networks = {}
        for physnet in PHYSNETS:
            body = self._neutron_req(
                "POST",
                "/networks",
                {
                    "network": {
                        "name": f"data-{physnet}",
                        "shared": True,
                        "provider:network_type": "flat",
                        "provider:physical_network": physnet,
                    }
                },
            )
            networks[physnet] = body["network"]["id"]
        return networks

    def _server_plan(self) -> list[dict[str, Any]]:
        """The lab's servers: a mix of projects and HA policies, spread over hosts."""
        plan = []
        n = -1
        for h_index, host in enumerate(self.host_names):
            count = self.spec.layout[h_index] if self.spec.layout else self.spec.servers_per_host
            for s in range(count):
                n += 1
                ha = n % 3 != 2  # one server in three opts out of HA
                plan.append(
                    {
                        "name": f"vm-{host}-{s + 1}",
                        "host": host,
                        "project": PROJECTS[n % len(PROJECTS)],
                        "physnet": PHYSNETS[n % len(PHYSNETS)],
                        "metadata": {"HA_Enabled": "True" if ha else "False"},
                    }
                )
        return plan

    def _create_server(self, item: dict[str, Any]) -> str:
        body = self._nova_req(
            "POST",
            "/servers",
            json_body={
                "server": {
                    "name": item["name"],
                    "imageRef": self.nova["image_id"],
                    "flavorRef": self.nova["flavor_id"],
                    "networks": "none",
                    "host": item["host"],
                    "metadata": item["metadata"],
                }
            },
            project=item["project"],
        )
        return str(body["server"]["id"])

    def _boot_servers(self, networks: dict[str, str]) -> None:
        plan = self._server_plan()
        for start in range(0, len(plan), BOOT_BATCH):
            batch = plan[start : start + BOOT_BATCH]
            ids = [self._create_server(item) for item in batch]
            for i, item in enumerate(batch):
                server_id = self._boot_settled(ids[i], item)
                port = self._neutron_req(
                    "POST",
                    "/ports",
                    {
                        "port": {
                            "name": f"{item['name']}-port",
                            "network_id": networks[item["physnet"]],
                            "device_id": server_id,
                            "device_owner": "compute:nova",
                            "binding:host_id": item["host"],
                            "project_id": item["project"],
                        }
                    },
                )["port"]
                self.servers[server_id] = {**item, "port": port["id"]}

    def _boot_settled(self, server_id: str, item: dict[str, Any]) -> str:
        """Wait for a boot; on a busy machine Nova's heartbeat round (one service at a
        time) can run late enough that the scheduler thinks the target host is down
        ("No valid host"): wait for the host's service, then boot it again."""
        attempt = 1
        while True:
            try:
                self._wait_active(server_id)
                return server_id
            except LabError as exc:
                if "No valid host" not in str(exc) or attempt >= BOOT_ATTEMPTS:
                    raise
            attempt += 1
            log.warning("boot of %s found no valid host; booting it again", item["name"])
            self._nova_req("DELETE", f"/servers/{server_id}")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                services = self._nova_req(
                    "GET", f"/os-services?binary=nova-compute&host={item['host']}", mv="2.53"
                )["services"]
                if services and services[0]["state"] == "up":
                    break
                time.sleep(0.5)
            server_id = self._create_server(item)

    def _wait_active(self, server_id: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self._nova_req("GET", f"/servers/{server_id}")["server"]
            if server["status"] == "ACTIVE":
                return
            if server["status"] == "ERROR":
                raise LabError(f"server {server_id} went to ERROR while booting: {server}")
            time.sleep(0.05)
        raise LabError(f"server {server_id} not ACTIVE within {timeout:.0f} s")

    def _start_bmcs(self) -> None:
        unknown = set(self.spec.redfish) - set(self.host_names)
        if unknown:
            raise LabError(f"--redfish names unknown hosts: {', '.join(sorted(unknown))}")
        self.farm = BmcFarm(self)
        for host in self.host_names:
            password = secrets.token_urlsafe(12)
            if host in self.spec.redfish:
                self.redfish[host] = RedfishBmc(host, BMC_USER, password, self)
                self.redfish[host].start()
                self.bmcs[host] = self.redfish[host].spec
            else:
                self.bmcs[host] = self.farm.add(host, BMC_USER, password)
        self.farm.start()

    # -- generated configuration --------------------------------------------------

    def _write_clouds_yaml(self) -> None:
        identity = f"http://127.0.0.1:{self.control_port}/identity/v3"
        base = {
            "auth_type": "none",
            "identity_endpoint_override": identity,
            "image_endpoint_override": f"http://127.0.0.1:{self.control_port}/image",
            "compute_endpoint_override": self.nova["api_url"],
            "network_endpoint_override": self.neutron["url"],
        }
        clouds: dict[str, Any] = {CLOUD_NAME: base}
        for project in PROJECTS:
            # A tenant's view: the lab's services map this token to a member of the project.
            clouds[f"{CLOUD_NAME}-{project}"] = {
                "auth_type": "admin_token",
                "auth": {"token": f"lab-project-{project}", "endpoint": self.nova["api_url"]},
                "identity_endpoint_override": identity,
                "image_endpoint_override": f"http://127.0.0.1:{self.control_port}/image",
                "compute_endpoint_override": self.nova["api_url"],
                "network_endpoint_override": self.neutron["url"],
            }
        write_text_atomic(self.paths.clouds_yaml, yaml.safe_dump({"clouds": clouds}))

    def _write_controller_config(self) -> None:
        write_text_atomic(self.paths.agent_key, self.agent_key.decode() + "\n", mode=0o600)
        secrets_toml = "".join(
            f'[{h}]\nusername = "{b.username}"\npassword = "{b.password}"\n\n'
            for h, b in self.bmcs.items()
        )
        write_text_atomic(self.paths.bmc_secrets, secrets_toml, mode=0o600)
        lines = [
            "# Written by `medevac lab up` for this lab; `medevac serve` runs against it.",
            "bmc_secrets_file = " + json.dumps(str(self.paths.bmc_secrets)),
            "agent_key_file = " + json.dumps(str(self.paths.agent_key)),
            "",
            "[api]",
            'host = "127.0.0.1"',
            f"port = {self.controller_port}",
            "rate_limit = 0  # the benchmarks and tests call as fast as they can",
            "",
            "[cloud]",
            f'name = "{CLOUD_NAME}"',
            "clouds_yaml = " + json.dumps(str(self.paths.clouds_yaml)),
            "",
            "[monitor]",
            'listen_host = "127.0.0.1"',
            f"listen_port = {self.heartbeat_port}",
            *(
                [f'nova_notifications_url = "{self.spec.transport_url}"']
                if self.nova.get("notifications")
                else []
            ),
            "",
            "[storage]",
            "url = " + json.dumps(f"sqlite:///{self.paths.controller_db}"),
            "",
            "[notifier]",
            "# The lab's consumers listen on loopback.",
            'action_allow_networks = ["127.0.0.0/8"]',
            "",
            "[[api.tokens]]",
            'name = "lab-admin"',
            f'token = "{self.admin_token}"',
            'role = "admin"',
            "",
            "[[api.tokens]]",
            'name = "lab-reader"',
            f'token = "{self.reader_token}"',
            'role = "reader"',
            "",
        ]
        for project, token in self.project_tokens.items():
            lines += [
                "[[api.tokens]]",
                f'name = "lab-{project}"',
                f'token = "{token}"',
                'role = "member"',
                f'project_id = "{project}"',
                "",
            ]
        for host, bmc in self.bmcs.items():
            lines += [f"[hosts.{host}]", 'bmc_address = "127.0.0.1"', f"bmc_port = {bmc.port}"]
            if host in self.redfish:
                lines += ['bmc_driver = "redfish"', 'redfish_scheme = "http"']
            lines.append("")
        write_text_atomic(self.paths.controller_config, "\n".join(lines), mode=0o600)

    # -- fault model --------------------------------------------------------------

    # -- agents: the same agent code as production, with lab probes -------------

    def _sync_agents(self) -> None:
        """On the event loop: an agent runs on every host whose OS runs; muted when cut off."""
        for name, host in self.hosts.items():
            with self.model_lock:
                alive, muted, boots = host.os_running, host.partitioned, host.boots
            current = self.agents.get(name)
            if current is not None and (not alive or current[0].boot != boots):
                current[1].cancel()  # the OS died (or rebooted): so did its agent
                del self.agents[name]
                current = None
            if alive and current is None:
                agent = Agent(
                    AgentConfig(
                        host=name,
                        controllers=(("127.0.0.1", self.heartbeat_port),),
                        key=self.agent_key,
                        bind=("127.0.0.1", 0),
                        restart_compute=functools.partial(self._restart_compute, name),
                    ),
                    LabProbes(self, name),
                )
                agent.boot = boots
                self.agents[name] = (agent, asyncio.ensure_future(agent.run()))
            if name in self.agents:
                self.agents[name][0].muted = muted

    def _agents_changed(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._sync_agents)

    def probe(self, host: str) -> Checks:
        """What the host's agent sees: called by LabProbes once per heartbeat."""
        with self.model_lock:
            faults = self.hosts[host]
            crashed = tuple(
                sid for sid in sorted(self.crashed_servers) if self.servers[sid]["host"] == host
            )
            return Checks(
                compute_alive=not faults.compute_process_down,
                links_down=tuple(sorted(faults.links_down)),
                domains_down=crashed,
            )

    def _reconcile(self, host: str) -> None:
        """Make Nova's compute service and the host's domains match the fault model."""
        with self.reconcile_lock:
            with self.model_lock:
                want = self.hosts[host]
                heartbeating, domains_alive, boots = (
                    want.compute_heartbeating,
                    want.domains_alive,
                    want.boots,
                )
            actual = self._control("GET", "/hosts")["hosts"][host]
            running, alive = actual["compute_running"], actual["domains_alive"]
            rebooted = boots != self._booted[host]  # e.g. a BMC power reset: off, then on
            if running and (not heartbeating or rebooted):
                keep = domains_alive and not rebooted
                self._control(
                    "POST", f"/hosts/{host}/stop", {"domains": "keep" if keep else "destroy"}
                )
                running, alive = False, keep
            if not running and heartbeating:
                body = {"domains_alive": alive and not rebooted}
                self._control("POST", f"/hosts/{host}/start", body)
            elif not running and alive and not domains_alive:
                self._control("POST", f"/hosts/{host}/stop", {"domains": "destroy"})
            self._booted[host] = boots

    def _record(
        self, action: str, kind: FaultKind, target: str, physnet: str | None
    ) -> dict[str, Any]:
        t, iso = _now()
        record = {"action": action, "kind": str(kind), "target": target, "time": t, "at": iso}
        if physnet:
            record["physnet"] = physnet
        with self.paths.faults_log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def apply_fault(
        self,
        kind: FaultKind,
        target: str,
        inject: bool,
        physnet: str | None = None,
        *,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Inject or heal one fault; returns the record with its wall-clock time (T00).

        ``target`` may list several hosts (``host1,host2``): the fault strikes them all
        at the same instant (one record), as when the controller itself is cut off.
        With ``wait`` the cloud reflects the fault when this returns; without it (BMC
        power control, which must answer at once) Nova catches up in the background.
        """
        action = "inject" if inject else "heal"
        if kind.targets_server:
            return self._apply_server_fault(target, inject)
        targets = [t.strip() for t in target.split(",")]
        with self.model_lock:
            unknown = [t for t in targets if t not in self.hosts]
            if unknown:
                known = ", ".join(self.hosts)
                raise FaultError(404, f"unknown host {unknown[0]!r} (hosts: {known})")
            if len(set(targets)) != len(targets):
                raise FaultError(400, f"a host is named twice in {target!r}")
            if kind.needs_physnet and not physnet:
                raise FaultError(400, f"{kind} needs a physnet ({', '.join(PHYSNETS)})")
            # Validate on copies first, so a refused host changes none of them.
            for t in targets:
                copy.deepcopy(self.hosts[t]).apply(kind, inject, physnet)
            for t in targets:
                self.hosts[t].apply(kind, inject, physnet)
                if kind is FaultKind.BMC_UNREACHABLE and t in self.redfish:
                    self.redfish[t].reachable = not inject
                elif kind is FaultKind.BMC_UNREACHABLE and self.farm is not None:
                    self.farm.set_reachable(t, not inject)
            record = self._record(action, kind, ",".join(targets), physnet)
        self._agents_changed()  # before Nova: the agent is what dies first
        for t in targets:
            if wait:
                self._reconcile(t)
            else:
                self._reconciler.submit(self._reconcile_logged, t)
        return record

    def _apply_server_fault(self, target: str, inject: bool) -> dict[str, Any]:
        with self.reconcile_lock:
            with self.model_lock:
                if target not in self.servers:
                    raise FaultError(404, f"unknown server {target!r}")
                if (target in self.crashed_servers) == inject:
                    state = "already crashed" if inject else "not crashed"
                    raise FaultError(409, f"server {target} is {state}")
                record = self._record(
                    "inject" if inject else "heal", FaultKind.SERVER_CRASH, target, None
                )
            self._control("POST", f"/servers/{target}/{'crash' if inject else 'heal'}")
            with self.model_lock:
                (self.crashed_servers.add if inject else self.crashed_servers.discard)(target)
            return record

    def _reconcile_logged(self, host: str) -> None:
        try:
            self._reconcile(host)
        except Exception:
            log.exception("reconciling %s after a BMC power change failed", host)

    async def _restart_compute(self, host: str) -> None:
        """What `systemctl restart nova-compute` is on a lab host: the process runs again."""
        with self.model_lock:
            down = self.hosts[host].compute_process_down
        if down:
            await asyncio.to_thread(self.apply_fault, FaultKind.COMPUTE_PROCESS_DOWN, host, False)

    # PowerHooks for the BMC farm: IPMI power control reaches the fault model. They
    # run on the BMC thread, so they change the model at once and never wait for Nova.
    def power_state(self, host: str) -> bool:
        with self.model_lock:
            return self.hosts[host].power_on

    def _set_power(self, host: str, on: bool) -> None:
        with self.model_lock:
            change = self.hosts[host].power_on != on
        if change:
            self.apply_fault(FaultKind.POWER_LOSS, host, inject=not on, wait=False)
        if not on:
            # Nova catches up in the background, but the servers stop now: a BMC that
            # says "off" while they still run would let an evacuated server run twice.
            self._control("POST", f"/hosts/{host}/power-cut")

    def power_off(self, host: str) -> None:
        self._set_power(host, False)

    def power_soft(self, host: str) -> None:
        self._set_power(host, False)

    def power_on(self, host: str) -> None:
        self._set_power(host, True)

    def power_reset(self, host: str) -> None:
        self._set_power(host, False)
        self._set_power(host, True)

    # -- views --------------------------------------------------------------------

    def running(self) -> dict[str, list[str]]:
        """For every server, the hosts whose hypervisor runs its domain right now."""
        domains: dict[str, list[str]] = self._control("GET", "/domains")
        out: dict[str, list[str]] = {sid: [] for sid in self.servers}
        for host, ids in domains.items():
            for sid in ids:
                out.setdefault(sid, []).append(host)
        return out

    def status(self) -> dict[str, Any]:
        services = self._nova_req("GET", "/os-services?binary=nova-compute", mv="2.53")
        by_host = {s["host"]: s for s in services["services"]}
        servers = self._nova_req("GET", "/servers/detail?all_tenants=1", mv="2.74")["servers"]
        ports = self._neutron_req("GET", "/ports")["ports"]
        networks = {
            n["id"]: n.get("provider:physical_network")
            for n in self._neutron_req("GET", "/networks")["networks"]
        }
        computes = self._control("GET", "/hosts")["hosts"]
        hosts = []
        for name, faults in self.hosts.items():
            svc = by_host.get(name, {})
            bmc = self.bmcs.get(name)
            hosts.append(
                {
                    "name": name,
                    "nova": {
                        "state": svc.get("state"),
                        "status": svc.get("status"),
                        "forced_down": svc.get("forced_down"),
                        "updated_at": svc.get("updated_at"),
                    },
                    "bmc": {
                        "address": "127.0.0.1" if bmc else None,
                        "port": bmc.port if bmc else None,
                        "power": "on" if faults.power_on else "off",
                        "reachable": not faults.bmc_unreachable,
                        "protocol": "redfish" if name in self.redfish else "ipmi",
                    },
                    "compute_process": (
                        "running" if computes[name]["compute_running"] else "stopped"
                    ),
                    "faults": faults.active(),
                    "links": {p: p not in faults.links_down for p in PHYSNETS},
                }
            )
        return {
            "hosts": hosts,
            "servers": [
                {
                    "id": s["id"],
                    "name": s["name"],
                    "project_id": s["tenant_id"],
                    "host": s.get("OS-EXT-SRV-ATTR:host"),
                    "status": s["status"],
                    "vm_state": s.get("OS-EXT-STS:vm_state"),
                    "task_state": s.get("OS-EXT-STS:task_state"),
                    "power_state": s.get("OS-EXT-STS:power_state"),
                    "host_status": s.get("host_status"),
                    "metadata": s.get("metadata", {}),
                }
                for s in servers
            ],
            "ports": [
                {
                    "id": p["id"],
                    "device_id": p["device_id"],
                    "host": p.get("binding:host_id"),
                    "physnet": networks.get(p["network_id"]),
                    "data_plane_status": p.get("data_plane_status"),
                }
                for p in ports
            ],
        }

    # -- stop ---------------------------------------------------------------------

    def stop(self) -> None:
        for _, task in self.agents.values():
            task.cancel()
        if self.farm is not None:
            self.farm.stop()
        for bmc in self.redfish.values():
            bmc.stop()
        self._reconciler.shutdown(wait=True, cancel_futures=True)
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + 15
        for child in self.children.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=5)
        self.http.close()


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
                "nova_url": lab.nova["api_url"],
                "neutron_url": lab.neutron["url"],
                "cloud": CLOUD_NAME,
                "clouds_yaml": str(paths.clouds_yaml),
                "controller_config": str(paths.controller_config),
                "controller_url": f"http://127.0.0.1:{lab.controller_port}",
                "admin_token": lab.admin_token,
                "hosts": lab.host_names,
                "servers": len(lab.servers),
                "notifications": bool(lab.nova.get("notifications")),
                "started_at": _now()[1],
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

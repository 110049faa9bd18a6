"""Nova (with Placement) and Neutron as the supervisor's child processes.

Each runs in its own process with the lab venv's interpreter (their dependencies
clash with medevac's and with each other's global configuration); the supervisor
talks to them over HTTP only: their APIs, and Nova's control API for the fake
hypervisors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from medevac.lab.layout import PHYSNETS, SERVICES_DIR, LabError, LabPaths, find_lab_python

SERVICE_START_TIMEOUT = 120.0


@dataclass
class ChildService:
    name: str
    process: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)


class OpenStackServices:
    """The lab's Nova and Neutron processes, and the HTTP calls into them."""

    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        self.children: dict[str, ChildService] = {}
        self.http = httpx.Client(timeout=60.0)
        # With the lab's Keystone: a token for a project's member (by project id), or
        # the admin's (None); else the tokens' lab form stands for them.
        self.sign_in: Callable[[str | None], str] | None = None

    def token(self, project: str | None = None) -> str:
        if self.sign_in is not None:
            return self.sign_in(project)
        return f"lab-project-{project}" if project else "lab-admin"

    async def start(
        self,
        hosts: list[str],
        *,
        report_interval: float,
        service_down_time: int,
        transport_url: str | None,
        keystone_port: int | None = None,
    ) -> None:
        """Start Nova and Neutron (and Keystone on ``keystone_port``, if given) at once;
        return when each wrote its ready file."""
        nova_args = [
            "--hosts",
            ",".join(hosts),
            "--report-interval",
            str(report_interval),
            "--service-down-time",
            str(service_down_time),
        ]
        if transport_url:
            nova_args += ["--transport-url", transport_url]
        neutron_db = self.paths.root / "neutron.sqlite"
        neutron_db.unlink(missing_ok=True)  # every lab starts from an empty cloud
        neutron_args = ["--physnets", ",".join(PHYSNETS), "--db", str(neutron_db)]
        if keystone_port is not None:
            # Both validate tokens in the lab's Keystone, which starts beside them.
            keystone = ["--keystone-url", f"http://127.0.0.1:{keystone_port}/v3"]
            nova_args += keystone
            neutron_args += keystone
        nova = self._spawn("nova", "nova_service.py", nova_args)
        neutron = self._spawn("neutron", "neutron_service.py", neutron_args)
        children = [nova, neutron]
        if keystone_port is not None:
            children.append(
                self._spawn(
                    "keystone",
                    "keystone_service.py",
                    [
                        "--state-dir",
                        str(self.paths.root / "keystone"),
                        "--port",
                        str(keystone_port),
                    ],
                )
            )
        await asyncio.gather(*(self._wait_ready(c) for c in children))

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
        """What Nova's ready file says: its API and control URLs, image and flavor ids."""
        return self.children["nova"].info

    @property
    def neutron(self) -> dict[str, Any]:
        return self.children["neutron"].info

    @property
    def keystone(self) -> dict[str, Any] | None:
        """Keystone's ready file (URL, auth URL, bootstrap password); None without one."""
        child = self.children.get("keystone")
        return child.info if child is not None else None

    def nova_req(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        mv: str = "2.74",
        project: str | None = None,
    ) -> Any:
        token = self.token(project)
        resp = self.http.request(
            method,
            self.nova["api_url"] + path,
            json=json_body,
            headers={"X-Auth-Token": token, "OpenStack-API-Version": f"compute {mv}"},
        )
        if resp.status_code >= 400:
            raise LabError(f"nova {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def neutron_req(self, method: str, path: str, json_body: Any = None) -> Any:
        resp = self.http.request(
            method,
            self.neutron["url"] + "/v2.0" + path,
            json=json_body,
            headers={"X-Auth-Token": self.token()},
        )
        if resp.status_code >= 400:
            raise LabError(f"neutron {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def control(self, method: str, path: str, json_body: Any = None) -> Any:
        """A call to Nova's control API: the fake hypervisors and compute services."""
        resp = self.http.request(method, self.nova["control_url"] + path, json=json_body)
        if resp.status_code >= 400:
            raise LabError(f"nova control {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def stop(self) -> None:
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

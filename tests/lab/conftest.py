"""A lab for the tests of this folder: started once per module through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from medevac.cloud import CloudDriver
from medevac.lab.client import LabClient
from medevac.lab.layout import LabPaths, find_lab_python

T = TypeVar("T")


def medevac(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `medevac` command line."""
    result = subprocess.run(
        [sys.executable, "-m", "medevac", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"medevac {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class RunningLab:
    paths: LabPaths
    info: dict[str, Any]
    client: LabClient
    driver: CloudDriver
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return medevac(*args, "--state-dir", str(self.paths.root), check=check)

    def status(self) -> dict[str, Any]:
        return self.client.status()

    def servers_on(self, host: str) -> list[dict[str, Any]]:
        return [s for s in self.status()["servers"] if s["host"] == host]

    def host(self, name: str) -> dict[str, Any]:
        return next(h for h in self.status()["hosts"] if h["name"] == name)

    def bmc_credentials(self, host: str) -> dict[str, str]:
        creds: dict[str, str] = tomllib.loads(self.paths.bmc_secrets.read_text())[host]
        return creds

    def ipmitool(
        self, host: str, *cmd: str, password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Debian's ipmitool against the host's BMC (its real password unless given)."""
        tool = shutil.which("ipmitool")
        if tool is None:
            pytest.fail("ipmitool is missing; `make deps` installs it")
        creds = self.bmc_credentials(host)
        port = str(self.host(host)["bmc"]["port"])
        return subprocess.run(
            [
                tool,
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                port,
                "-U",
                creds["username"],
                "-P",
                password or creds["password"],
                *cmd,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def no_server_runs_twice(self) -> None:
        running = self.client.running()
        twice = {s: h for s, h in running.items() if len(h) > 1}
        assert not twice, f"servers running on two hosts: {twice}"


def lab_processes(state_dir: Path) -> list[str]:
    """Processes whose command line names this lab's state dir or its services."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(state_dir) in line]


def start_lab(state_dir: Path, hosts: int, servers_per_host: int) -> Iterator[RunningLab]:
    try:
        find_lab_python()
    except Exception as exc:  # the lab venv is part of `make test`
        pytest.fail(f"lab venv missing: {exc}")
    medevac(
        "lab",
        "up",
        "--hosts",
        str(hosts),
        "--servers-per-host",
        str(servers_per_host),
        "--state-dir",
        str(state_dir),
    )
    paths = LabPaths(state_dir)
    info = json.loads(paths.info.read_text())
    loop = asyncio.new_event_loop()
    driver = CloudDriver(info["cloud"], clouds_yaml=Path(info["clouds_yaml"]))
    client = LabClient(paths)
    try:
        yield RunningLab(paths, info, client, driver, loop)
    finally:
        client.close()
        loop.run_until_complete(driver.close())
        loop.close()
        tcp_ports = [
            int(url.rsplit(":", 1)[1].split("/")[0])
            for url in (info["control_url"], info["nova_url"], info["neutron_url"])
        ]
        udp_ports = [
            int(line.split("=")[1])
            for line in paths.controller_config.read_text().splitlines()
            if line.startswith("bmc_port")
        ]
        medevac("lab", "down", "--state-dir", str(state_dir))
        assert lab_processes(state_dir) == []
        assert all(port_free(socket.SOCK_STREAM, p) for p in tcp_ports), "a TCP port stayed in use"
        assert all(port_free(socket.SOCK_DGRAM, p) for p in udp_ports), "a BMC port stayed in use"


def port_free(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        # TIME_WAIT left by closed connections is not a listener still running.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("lab"), hosts=5, servers_per_host=2)

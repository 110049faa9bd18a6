"""A lab for the tests of this folder: started once per module through the real CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from medevac.cloud import CloudDriver
from medevac.lab import partition
from medevac.lab.client import LabClient
from medevac.lab.layout import LabError, LabPaths, find_lab_python
from tests.conftest import ConsumerProcess, wait_for

T = TypeVar("T")


def _lab_bin() -> Path:
    """The lab venv's bin directory, found as the lab finds it ($MEDEVAC_LAB_PYTHON first)."""
    try:
        return find_lab_python().parent
    except LabError:
        return Path(__file__).resolve().parents[2] / ".venv-lab" / "bin"


LAB_BIN = _lab_bin()
VERDICT_WITHIN = 10.0


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
    """Processes whose command line names this lab's state dir or its services, or
    whose environment points at its configuration (a controller started on it)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found = [line for line in out.splitlines() if str(state_dir) in line]
    needle = f"MEDEVAC_CONFIG={state_dir}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "environ").read_bytes():
                found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()!r}")
    return found


def start_lab(
    state_dir: Path,
    hosts: int,
    servers_per_host: int,
    redfish: str = "",
    keep_store: bool = False,
    controllers: int = 1,
    identity: str = "static",
) -> Iterator[RunningLab]:
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
        *(["--redfish", redfish] if redfish else []),
        *(["--keep-store"] if keep_store else []),
        *(["--controllers", str(controllers)] if controllers > 1 else []),
        "--identity",
        identity,
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
            for url in (
                info["control_url"],
                info["nova_url"],
                info["neutron_url"],
                *([info["keystone"]["auth_url"]] if info.get("keystone") else []),
            )
        ]
        udp_ports = [
            int(line.split("=")[1])
            for line in Path(info["controller_config"]).read_text().splitlines()
            if line.startswith("bmc_port")
        ]
        medevac("lab", "down", "--state-dir", str(state_dir))
        assert lab_processes(state_dir) == []
        cut = partition.leftovers(partition.lab_tag(state_dir))
        assert cut == ([], []), f"controller-partition left rules or cgroups: {cut}"
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


@pytest.fixture(scope="module")
def hooks() -> Iterator[ConsumerProcess]:
    """A consumer for the module's alarms (the lab's webhook receiver, in a process)."""
    c = ConsumerProcess()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("lab"), hosts=5, servers_per_host=2)


def openstack(
    lab: RunningLab, *args: str, cloud: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `openstack` CLI (from the lab venv) against the lab."""
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": lab.info["clouds_yaml"],
        "OS_CLOUD": cloud or lab.info["cloud"],
    }
    return subprocess.run(
        [str(LAB_BIN / "openstack"), *args], capture_output=True, text=True, env=env, timeout=120
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def as_json(lab: RunningLab, *args: str, cloud: str | None = None) -> Any:
    """Run an `openstack` command with `-f json` and return what it printed."""
    return json.loads(ok(openstack(lab, *args, "-f", "json", cloud=cloud)))


@dataclass
class Controller:
    """A real `medevac serve` on the configuration `lab up` wrote (``index``: which of
    a lab of several controllers, from 0)."""

    lab: RunningLab
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    index: int = 0

    @classmethod
    def start(cls, lab: RunningLab, index: int = 0, **overrides: str) -> Controller:
        ctl = cls.spawn(lab, index, **overrides)
        ctl.wait_ready()
        return ctl

    @classmethod
    def spawn(cls, lab: RunningLab, index: int = 0, **overrides: str) -> Controller:
        """Started, not waited for."""
        config = lab.info["controllers"][index]["config"] if index else None
        config = config or lab.info["controller_config"]
        env = {**os.environ, "MEDEVAC_CONFIG": config, **overrides}
        log = cls._log_of(lab, index)
        return cls(lab, env, cls._spawn(env, log), index)

    @classmethod
    def start_all(cls, lab: RunningLab, **overrides: str) -> list[Controller]:
        """Every controller of a lab of several, each once every host is shared out."""
        ctls = [cls.spawn(lab, i, **overrides) for i in range(len(lab.info["controllers"]))]
        try:
            for c in ctls:
                c.wait_ready()
            wait_for("the hosts shared out", lambda: shared_out(ctls), 30)
        except BaseException:
            for c in ctls:
                if c.proc.poll() is None:
                    c.kill()
            raise
        return ctls

    @staticmethod
    def _log_of(lab: RunningLab, index: int) -> Path:
        if len(lab.info.get("controllers") or []) > 1:
            return lab.paths.controller_log_of(index + 1)
        return lab.paths.root / "controller.log"

    @property
    def log(self) -> Path:
        return self._log_of(self.lab, self.index)

    @staticmethod
    def _spawn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "medevac", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text()[-3000:]
            raise AssertionError(f"medevac serve exited ({self.proc.returncode}):\n{tail}")

    @property
    def url(self) -> str:
        if self.index:
            return str(self.lab.info["controllers"][self.index]["url"])
        return str(self.lab.info["controller_url"])

    @property
    def member_id(self) -> str | None:
        found = self.lab.info.get("controllers") or [{}]
        return found[self.index].get("member_id")

    def cluster(self) -> dict[str, Any] | None:
        """Its /v1/cluster; None when it does not answer."""
        try:
            return dict(self.get("/v1/cluster"))
        except httpx.HTTPError:
            return None

    @property
    def token(self) -> str:
        return str(self.lab.info["admin_token"])

    def wait_ready(self) -> None:
        def all_up() -> bool:
            self._alive()
            try:
                return all(h["state"] == "UP" for h in self.get("/v1/hosts")["hosts"])
            except httpx.HTTPError:
                return False

        wait_for("every lab host to be UP in the monitor", all_up, 30)

    def restart(self) -> None:
        """Start again after stop/kill; returns once the API answers (hosts may be down)."""
        self.proc = self._spawn(self.env, self.log)

        def answers() -> bool:
            self._alive()
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the controller to answer", answers, 30)

    def stop(self) -> None:
        """SIGTERM: it writes what it holds and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        tail = self.log.read_text()[-3000:]
        assert self.proc.returncode == 0, f"medevac serve did not stop cleanly:\n{tail}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, headers={"X-Auth-Token": self.token}, timeout=10)
        r.raise_for_status()
        return r.json()

    def verdicts(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/verdicts")["verdicts"])

    def host(self, name: str) -> dict[str, Any]:
        return next(h for h in self.get("/v1/hosts")["hosts"] if h["name"] == name)

    def wait_verdict(
        self, kind: str, host: str, after: int, subject: str | None = None
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for v in self.verdicts()[after:]:
                if (
                    v["kind"] == kind
                    and v["host"] == host
                    and (subject is None or v["subject"] == subject)
                ):
                    return v
            return None

        return wait_for(f"{kind} for {host}", found, VERDICT_WITHIN, 0.05)


def shared_out(ctls: list[Controller]) -> bool:
    """Every controller sees all of them, and each lab host has exactly one owner."""
    views = [c.cluster() for c in ctls]
    if any(v is None or len(v["members"]) != len(ctls) for v in views):
        return False
    owned = sorted(h for v in views if v is not None for h in v["hosts"])
    return owned == sorted(ctls[0].lab.info["hosts"])

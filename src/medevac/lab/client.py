"""Starting, stopping and talking to a lab supervisor from another process."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from medevac.lab import partition
from medevac.lab.identity import IDENTITIES
from medevac.lab.layout import LabError, LabPaths, find_lab_python, pid_alive, write_json_atomic

UP_TIMEOUT = 300.0
LOCAL_RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"
DOWN_TIMEOUT = 30.0
# A lab of several controllers: the PostgreSQL server their store is created on (a
# database per lab), and the Redis of their coordination group.
LAB_POSTGRES_ENV = "MEDEVAC_LAB_POSTGRES"
LAB_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
LAB_REDIS_PORT = 6379


class LabClient:
    """The control API of a running lab."""

    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        info = paths.read_info()
        if info is None or not pid_alive(int(info.get("pid", 0))):
            raise LabError(f"no lab is running (state dir {paths.root}); start one: medevac lab up")
        self.info = info
        self._http = httpx.Client(base_url=info["control_url"], timeout=120.0)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise LabError(f"lab control API unreachable: {exc}") from None
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error") or resp.json().get("detail")
            except ValueError:
                message = resp.text
            raise LabError(str(message))
        return resp.json()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/status")
        return result

    def running(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = self._call("GET", "/running")
        return result

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return result

    def inject(self, kind: str, target: str, physnet: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/inject", {"kind": kind, "target": target, "physnet": physnet}
        )
        return result

    def heal(self, kind: str, target: str, physnet: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/heal", {"kind": kind, "target": target, "physnet": physnet}
        )
        return result

    def close(self) -> None:
        self._http.close()


def running_pid(paths: LabPaths) -> int | None:
    """The pid of the lab supervisor of this state dir, if one is alive."""
    for source in (paths.read_info(), _read_lock(paths)):
        if source and pid_alive(int(source.get("pid", 0))):
            return int(source["pid"])
    return None


def _read_lock(paths: LabPaths) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(paths.lock.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def lab_up(
    paths: LabPaths,
    hosts: int,
    servers_per_host: int,
    *,
    report_interval: float = 1.0,
    service_down_time: int = 5,
    transport_url: str | None = "auto",
    layout: list[int] | None = None,
    ready_within: float = UP_TIMEOUT,
    redfish: list[str] | None = None,
    keep_store: bool = False,
    controllers: int = 1,
    identity: str = "static",
) -> dict[str, Any]:
    """Start a lab supervisor in the background and wait until it is ready.

    ``controllers`` > 1: that many controller configurations on one PostgreSQL
    database created for the lab (dropped by ``lab_down``) and one Redis group.

    The controller's store starts empty: a previous lab's incidents name servers and
    ports this lab's Nova never had. ``keep_store`` keeps it (``store`` in the answer
    says which: "fresh", "kept", or "removed" when a previous one was dropped).

    ``layout`` gives each host's number of servers (``hosts`` and
    ``servers_per_host`` are then ignored).

    ``redfish`` names the hosts whose BMC speaks Redfish (the others speak IPMI).

    ``identity`` "keystone" runs a real Keystone: users with passwords in clouds.yaml
    and lab.json, and the controller accepts their tokens; "static" (the default)
    has none, and a token's form decides who it is.

    ``transport_url`` "auto" publishes Nova's notifications to a local RabbitMQ
    when one answers on 127.0.0.1:5672; "none" or None never does.
    """
    pid = running_pid(paths)
    if pid is not None:
        raise LabError(
            f"a lab is already running (pid {pid}, state dir {paths.root}); "
            "stop it first: medevac lab down"
        )
    if layout:
        hosts, servers_per_host = len(layout), max(layout)
        if min(layout) < 0:
            raise LabError("--layout counts cannot be negative")
    if hosts < 2:
        raise LabError("a lab needs at least 2 hosts (evacuation needs somewhere to go)")
    if servers_per_host < 0:
        raise LabError("--servers-per-host cannot be negative")
    if controllers < 1:
        raise LabError("--controllers must be at least 1")
    if identity not in IDENTITIES:
        raise LabError(f"--identity must be one of {', '.join(IDENTITIES)}, not {identity!r}")
    find_lab_python()  # fail early with the install hint
    if transport_url == "auto":
        transport_url = LOCAL_RABBIT if _port_open(5672) else None
    elif transport_url == "none":
        transport_url = None
    paths.root.mkdir(parents=True, exist_ok=True)
    for stale in (paths.info, paths.root / "failed.json", paths.faults_log):
        stale.unlink(missing_ok=True)
    cluster: list[str] = []
    if controllers > 1:
        store, storage_url = _cluster_database(paths, keep_store)
        group = f"{paths.database_name}-{secrets.token_hex(3)}"
        cluster = ["--controllers", str(controllers), "--storage-url", storage_url]
        cluster += ["--group", group]
    else:
        previous = [f for f in paths.controller_store if f.exists()]
        store = "kept" if previous and keep_store else "removed" if previous else "fresh"
        if store == "removed":
            for f in previous:
                f.unlink()
    cmd = [
        sys.executable,
        "-m",
        "medevac.lab.supervisor",
        "--state-dir",
        str(paths.root),
        "--hosts",
        str(hosts),
        "--servers-per-host",
        str(servers_per_host),
        "--report-interval",
        str(report_interval),
        "--service-down-time",
        str(service_down_time),
    ]
    if transport_url:
        cmd += ["--transport-url", transport_url]
    if layout:
        cmd += ["--layout", ",".join(str(n) for n in layout)]
    if redfish:
        cmd += ["--redfish", ",".join(redfish)]
    cmd += cluster
    if identity != "static":
        cmd += ["--identity", identity]
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` stops everything
            cwd=Path.cwd(),
        )
    paths.lock.write_text(json.dumps({"pid": proc.pid}))
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        info = paths.read_info()
        if info is not None:
            return {**info, "store": store}
        if proc.poll() is not None:
            failed = paths.root / "failed.json"
            reason = json.loads(failed.read_text())["error"] if failed.exists() else "see log"
            _kill_group(proc.pid)
            raise LabError(f"the lab failed to start: {reason} (log: {paths.log})")
        time.sleep(0.1)
    _kill_group(proc.pid)
    raise LabError(f"the lab was not ready within {ready_within:.0f} s (log: {paths.log})")


def _postgres() -> str:
    return os.environ.get(LAB_POSTGRES_ENV) or LAB_POSTGRES


def _database_exists(name: str) -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(_postgres() + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            q = text("SELECT 1 FROM pg_database WHERE datname = :name")
            return c.execute(q, {"name": name}).first() is not None
    finally:
        engine.dispose()


def _admin_sql(statement: str, server: str | None = None) -> None:
    """One statement on the PostgreSQL server's ``postgres`` database, autocommitted."""
    from sqlalchemy import create_engine, text

    engine = create_engine((server or _postgres()) + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text(statement))
    finally:
        engine.dispose()


def _cluster_database(paths: LabPaths, keep: bool) -> tuple[str, str]:
    """The lab's PostgreSQL database, created (afresh unless ``keep``) and remembered
    in the state dir for ``lab_down``; returns what became of a previous one, and its
    URL. A clear error when PostgreSQL or Redis does not answer."""
    for port, what in ((5432, "PostgreSQL"), (LAB_REDIS_PORT, "Redis")):
        if port == 5432 and os.environ.get(LAB_POSTGRES_ENV):
            continue
        if not _port_open(port):
            raise LabError(
                f"several controllers need {what} on 127.0.0.1:{port} (`make services` starts it)"
            )
    name = paths.database_name
    try:
        found = _database_exists(name)
        if found and not keep:
            _admin_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not found or not keep:
            _admin_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        raise LabError(f"cannot create the lab's database on {_postgres()}: {exc}") from None
    write_json_atomic(paths.cluster, {"database": name, "server": _postgres()})
    store = "kept" if found and keep else "removed" if found else "fresh"
    return store, f"{_postgres()}/{name}"


def _drop_cluster_database(paths: LabPaths) -> None:
    try:
        cluster = json.loads(paths.cluster.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    try:
        _admin_sql(
            f'DROP DATABASE IF EXISTS "{cluster["database"]}" WITH (FORCE)', cluster["server"]
        )
    except Exception as exc:
        raise LabError(f"could not drop the lab's database {cluster['database']}: {exc}") from None
    paths.cluster.unlink(missing_ok=True)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # reap the supervisor when it is our own child
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_down(paths: LabPaths) -> bool:
    """Stop the lab and every process it started; False if none was running."""
    pid = running_pid(paths)
    if pid is None:
        paths.info.unlink(missing_ok=True)
        paths.lock.unlink(missing_ok=True)
        partition.clean(partition.lab_tag(paths.root))
        _drop_cluster_database(paths)
        return False
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    if _group_alive(pid):
        _kill_group(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5
        while time.monotonic() < kill_deadline and _group_alive(pid):
            time.sleep(0.05)
    paths.info.unlink(missing_ok=True)
    paths.lock.unlink(missing_ok=True)
    partition.clean(partition.lab_tag(paths.root))  # a supervisor killed leaves its cuts
    _drop_cluster_database(paths)
    return True


def lab_env(paths: LabPaths) -> dict[str, str]:
    """Environment that points openstack CLI, openstacksdk and medevac at the lab."""
    info = paths.read_info()
    if info is None:
        raise LabError(f"no lab is running (state dir {paths.root}); start one: medevac lab up")
    return {
        "OS_CLIENT_CONFIG_FILE": info["clouds_yaml"],
        "OS_CLOUD": info["cloud"],
        "MEDEVAC_CONFIG": info["controller_config"],
        "MEDEVAC_URL": info["controller_url"],
        "MEDEVAC_TOKEN": info["admin_token"],
    }


def lab_controllers(paths: LabPaths) -> list[dict[str, Any]]:
    """The controllers `lab up` configured (member_id, url, config, heartbeat_port):
    one for a lab of one (member_id None)."""
    info = paths.read_info()
    if info is None:
        raise LabError(f"no lab is running (state dir {paths.root}); start one: medevac lab up")
    found: list[dict[str, Any]] = info.get("controllers") or [
        {"member_id": None, "url": info["controller_url"], "config": info["controller_config"]}
    ]
    return found


def project_tokens(controller_config: str | Path) -> dict[str, str]:
    """The member token of each tenant project, from the configuration `lab up` wrote."""
    from medevac.config import Role, load_settings

    settings = load_settings(controller_config)
    return {
        t.project_id: t.token.get_secret_value()
        for t in settings.api.tokens
        if t.role is Role.MEMBER and t.project_id
    }


class TwoHostWatch:
    """Samples where every server runs, in the background, while in its ``with``
    block: any server on two hosts at any sample breaks the first safety rule."""

    def __init__(self, client: LabClient, every: float = 0.1) -> None:
        self.client = client
        self.every = every
        self.samples = 0
        self.twice: list[dict[str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="two-host-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            running = self.client.running()
            self.samples += 1
            doubled = {s: h for s, h in running.items() if len(h) > 1}
            if doubled:
                self.twice.append(doubled)
            self._stop.wait(self.every)

    def __enter__(self) -> TwoHostWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

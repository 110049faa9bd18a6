"""Shared fixtures: tokens, settings, a database per test, polling helper."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text

from medevac.config import ApiConfig, ApiToken, NotifierConfig, Role, Settings, StorageConfig
from medevac.storage import Database

T = TypeVar("T")

ADMIN_TOKEN = "admin-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
MEMBER_TOKEN = "member-token-0123456789"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def serve_config(tmp_path: Path) -> tuple[Path, int]:
    """A minimal `medevac serve` configuration (SQLite store, one admin token) and its
    API port."""
    port = free_port()
    config = tmp_path / "medevac.toml"
    config.write_text(
        f'[api]\nport = {port}\n[storage]\nurl = "sqlite:///{tmp_path / "c.db"}"\n'
        f'[[api.tokens]]\nname = "ops"\ntoken = "{ADMIN_TOKEN}"\nrole = "admin"\n'
    )
    return config, port


def wait_healthy(port: int, timeout: float = 20) -> None:
    """Wait until the controller on ``port`` answers /healthz."""

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the controller to answer /healthz", healthy, timeout)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        api=ApiConfig(
            max_body_bytes=4096,
            tokens=[
                ApiToken(name="ops", token=ADMIN_TOKEN, role=Role.ADMIN),  # type: ignore[arg-type]
                ApiToken(name="auditor", token=READER_TOKEN, role=Role.READER),  # type: ignore[arg-type]
                ApiToken(
                    name="tenant",
                    token=MEMBER_TOKEN,  # type: ignore[arg-type]
                    role=Role.MEMBER,
                    project_id="p1",
                ),
            ],
        ),
        storage=StorageConfig(url=f"sqlite:///{tmp_path / 'medevac.db'}"),
        # The tests' consumers listen on loopback, which alarm actions may not reach
        # unless allowed.
        notifier=NotifierConfig(action_allow_networks=["127.0.0.0/8"]),  # type: ignore[list-item]
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.storage.url)
    database.migrate()
    yield database
    database.dispose()


def postgres_available() -> bool:
    return port_open(5432)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database, not migrated: a SQLite file, then a PostgreSQL database of
    its own on 127.0.0.1:5432 (which must be running: these tests never skip)."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'm.db'}")
        yield database
        database.dispose()
        return
    if not postgres_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432")
    admin = Database(POSTGRES_URL)
    name = f"medevac_test_{uuid.uuid4().hex[:10]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    yield database
    database.dispose()
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'DROP DATABASE "{name}"'))
    admin.dispose()


class ConsumerProcess:
    """`python -m medevac.lab.consumer` on a free port: a real webhook receiver."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medevac.lab.consumer", "--port", str(self.port)]
        )
        wait_for("the consumer to listen", lambda: port_open(self.port), 15)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        httpx.post(self.url + "/_consumer/" + path, json=body or {}, timeout=5).raise_for_status()

    def state(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/_consumer/received", timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def received(self) -> list[dict[str, Any]]:
        return list(self.state()["received"])

    def down(self) -> None:
        self._post("down")

    def up(self) -> None:
        self._post("up")

    def slow(self, seconds: float) -> None:
        self._post("slow", {"seconds": seconds})

    def reset(self) -> None:
        self._post("reset")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def consumer() -> Iterator[ConsumerProcess]:
    c = ConsumerProcess()
    yield c
    c.stop()

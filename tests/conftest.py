"""Shared fixtures: tokens, settings, a database per test, polling helper.

A test module about the store (storage, outbox, alarms, incidents, retention,
workflows) says ``pytestmark = pytest.mark.databases``: each of its tests that uses
the database (``db``, ``settings``, ``storage_url``) then runs twice, on a SQLite file
and on a PostgreSQL database of its own (``[sqlite]``, ``[postgresql]``). A test of it
that holds on one only says ``@pytest.mark.databases("sqlite")``. PostgreSQL must run on
127.0.0.1:5432 (``make test`` brings it up): a test that needs it and finds it not
running fails, it is never skipped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from medevac.config import ApiConfig, ApiToken, NotifierConfig, Role, Settings, StorageConfig
from medevac.storage import Database

T = TypeVar("T")

ADMIN_TOKEN = "admin-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
MEMBER_TOKEN = "member-token-0123456789"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASES = ("sqlite", "postgresql")


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


def postgres_available() -> bool:
    return port_open(5432)


@contextmanager
def throwaway_postgres(prefix: str = "medevac_test") -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database on 127.0.0.1:5432, dropped afterwards
    with whatever is still connected to it; fails the test if PostgreSQL is not running."""
    if not postgres_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (make services starts it)")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``databases`` marks: the tests that use the database run on each one named (both
    when none is)."""
    marker = metafunc.definition.get_closest_marker("databases")
    if marker is None or "database_kind" not in metafunc.fixturenames:
        return
    kinds = marker.args or DATABASES
    unknown = set(kinds) - set(DATABASES)
    if unknown:
        raise pytest.UsageError(f"databases: unknown {sorted(unknown)} (one of {DATABASES})")
    metafunc.parametrize("database_kind", database_params(tuple(kinds)), indirect=True)


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    """Which database the test's store is: sqlite, unless its module or itself is
    marked ``databases``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def storage_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    """The test's own database, empty: a SQLite file, or a PostgreSQL database."""
    if database_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'medevac.db'}"
        return
    with throwaway_postgres() as url:
        yield url


@pytest.fixture
def settings(storage_url: str) -> Settings:
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
        storage=StorageConfig(url=storage_url),
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


def database_params(kinds: tuple[str, ...] = DATABASES) -> list[Any]:
    """``kinds`` as parameters, those on PostgreSQL marked ``postgres``."""
    return [
        pytest.param(k, id=k, marks=[pytest.mark.postgres] if k == "postgresql" else [])
        for k in kinds
    ]


@pytest.fixture(params=database_params())
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database, not migrated: a SQLite file, then a PostgreSQL database of
    its own on 127.0.0.1:5432 (which must be running: these tests never skip)."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'm.db'}")
        yield database
        database.dispose()
        return
    with throwaway_postgres() as url:
        database = Database(url)
        yield database
        database.dispose()


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

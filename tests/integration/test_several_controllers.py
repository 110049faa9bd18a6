"""Three `medevac serve` processes on one PostgreSQL store and a real Redis: they
share the hosts, each host has one owner under a recorded epoch, and when one is
killed (SIGKILL) or paused (SIGSTOP) its hosts move to the others within the
membership timeout plus a second; a paused one that wakes was replaced, restarts
afresh and rejoins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from medevac.storage import Database
from medevac.storage.records import HostStore
from tests.conftest import ADMIN_TOKEN, POSTGRES_URL, free_port, port_open, wait_for, wait_healthy

HOSTS = [f"compute-{i}" for i in range(1, 10)]
TIMEOUT = 1.0
AUTH = {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture
def store_url() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    if not port_open(6379):
        pytest.fail("Redis is not running on 127.0.0.1:6379 (make services starts it)")
    if not port_open(5432):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (make services starts it)")
    admin = Database(POSTGRES_URL)
    name = f"medevac_ha_{uuid.uuid4().hex[:10]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


class Controller:
    def __init__(self, tmp: Path, name: str, store: str, group: str) -> None:
        self.name = name
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        key, secrets = tmp / "agent.key", tmp / "bmc.toml"
        if not key.exists():
            key.write_text(uuid.uuid4().hex)
            secrets.write_text(
                "".join(f'[{h}]\nusername = "admin"\npassword = "pw"\n' for h in HOSTS)
            )
        hosts = "".join(
            f'[hosts.{h}]\nbmc_address = "127.0.0.1"\nbmc_port = {free_port()}\n' for h in HOSTS
        )
        self.config = tmp / f"{name}.toml"
        self.config.write_text(
            f'agent_key_file = "{key}"\nbmc_secrets_file = "{secrets}"\n'
            f"[api]\nport = {self.port}\n"
            f'[[api.tokens]]\nname = "ops"\ntoken = "{ADMIN_TOKEN}"\nrole = "admin"\n'
            f'[storage]\nurl = "{store}"\n'
            f'[cluster]\ncoordination_url = "redis://127.0.0.1:6379"\nmember_id = "{name}"\n'
            f'membership_timeout = {TIMEOUT}\ngroup = "{group}"\n'
            f"[monitor]\nlisten_port = {free_port()}\n"
            f"{hosts}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MEDEVAC_CONFIG": str(self.config)}
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medevac", "serve"], env=env, stdout=out, stderr=out
        )

    def cluster(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/v1/cluster", headers=AUTH, timeout=2)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def owned(self) -> set[str]:
        view = self.cluster()
        return set(view["hosts"]) if view else set()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def shares_settled(ctls: list[Controller], members: int) -> bool:
    """Every live controller sees ``members`` members and the hosts are shared out,
    each owned by exactly one of them."""
    views = [c.cluster() for c in ctls]
    if any(v is None or len(v["members"]) != members for v in views):
        return False
    owned = [set(v["hosts"]) for v in views if v is not None]
    return sorted(h for o in owned for h in o) == sorted(HOSTS)


@pytest.fixture
def controllers(tmp_path: Path, store_url: str) -> Iterator[list[Controller]]:
    group = f"medevac-test-{uuid.uuid4().hex[:8]}"
    ctls = [Controller(tmp_path, f"ctl-{i}", store_url, group) for i in (1, 2, 3)]
    try:
        for c in ctls:
            c.start()
        for c in ctls:
            wait_healthy(c.port, timeout=60)
        wait_for("the hosts shared out", lambda: shares_settled(ctls, 3), 20)
        yield ctls
    finally:
        codes = {c.name: c.stop() for c in ctls}
        logs = {c.name: c.log.read_text(errors="replace")[-3000:] for c in ctls}
    for name, code in codes.items():
        assert code in (0, -signal.SIGKILL), f"{name} exited with {code}:\n{logs[name]}"


def test_each_host_has_one_owner_under_a_recorded_epoch(
    controllers: list[Controller], store_url: str
) -> None:
    db = Database(store_url)

    def agreed() -> bool:
        """What each controller says it holds is what the store records."""
        views = {c.name: c.cluster() for c in controllers}
        rows = {r.name: (r.owner, r.epoch) for r in HostStore(db).all()}
        held = {h: (name, e) for name, v in views.items() if v for h, e in v["hosts"].items()}
        return held == rows and len(rows) == len(HOSTS)

    try:
        wait_for("the views and the store to agree", agreed, 4 * TIMEOUT)
        for c in controllers:
            view = c.cluster()
            assert view is not None and view["lease_valid"] and not view["isolated"]
            assert 1 <= len(view["hosts"]) <= 6, (c.name, view["hosts"])  # about a third each
    finally:
        db.dispose()


def test_a_killed_controllers_hosts_move_within_the_membership_timeout(
    controllers: list[Controller], store_url: str
) -> None:
    victim = max(controllers, key=lambda c: len(c.owned()))
    theirs = victim.owned()
    before = {h: e for c in controllers for h, e in (c.cluster() or {"hosts": {}})["hosts"].items()}
    survivors = [c for c in controllers if c is not victim]
    assert victim.proc is not None
    killed = time.monotonic()
    os.kill(victim.proc.pid, signal.SIGKILL)
    wait_for("its hosts taken over", lambda: shares_settled(survivors, 2), TIMEOUT + 5)
    took = time.monotonic() - killed
    print(f"{len(theirs)} hosts re-owned {took * 1000:.0f} ms after SIGKILL (timeout {TIMEOUT} s)")
    assert took <= TIMEOUT + 1.0
    after = {h: e for c in survivors for h, e in (c.cluster() or {"hosts": {}})["hosts"].items()}
    assert all(after[h] == before[h] + 1 for h in theirs)  # a new epoch for each moved host
    assert all(after[h] == before[h] for h in set(HOSTS) - theirs)  # the others stayed


def test_a_paused_controller_is_replaced_then_restarts_and_rejoins(
    controllers: list[Controller],
) -> None:
    sleeper = controllers[0]
    others = controllers[1:]
    assert sleeper.proc is not None
    pid = sleeper.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for("the others own everything", lambda: shares_settled(others, 2), TIMEOUT + 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(
        "it says it was replaced",
        lambda: "was replaced while it was not heard from" in sleeper.log.read_text(),
        15,
    )
    wait_for("back with its share", lambda: shares_settled(controllers, 3), 60)
    assert sleeper.proc.poll() is None and sleeper.proc.pid == pid  # the same process, afresh

"""Three `medevac serve` processes on one PostgreSQL store and a real Redis: they
share the hosts, each host has one owner under a recorded epoch, and when one is
killed (SIGKILL) or paused (SIGSTOP) its hosts move to the others within the
membership timeout plus a second; a paused one that wakes was replaced, restarts
afresh and rejoins.

The Redis tests share one three-controller cluster (a controller a test killed is
started again, and the hosts shared out, before the next test); etcd's has its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from medevac.storage import Database
from medevac.storage.records import HostStore
from tests.conftest import (
    ADMIN_TOKEN,
    ConsumerProcess,
    free_port,
    port_open,
    throwaway_postgres,
    wait_for,
    wait_healthy,
)

HOSTS = [f"compute-{i}" for i in range(1, 10)]
REDIS = "redis://127.0.0.1:6379"
ETCD = "etcd3+http://127.0.0.1:2379"
BACKEND_PORTS = {REDIS: 6379, ETCD: 2379}
TIMEOUT = 2.0  # shorter flaps under load on a 2-core machine with three controllers
AUTH = {"X-Auth-Token": ADMIN_TOKEN}


@pytest.fixture(scope="module")
def store_url() -> Iterator[str]:
    """A PostgreSQL database of the module's own, dropped afterwards."""
    with throwaway_postgres("medevac_ha") as url:
        yield url


class Controller:
    def __init__(self, tmp: Path, name: str, store: str, group: str, backend: str) -> None:
        self.name = name
        self.port = free_port()
        self.heartbeat_port = free_port(socket.SOCK_DGRAM)
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
            f'[cluster]\ncoordination_url = "{backend}"\nmember_id = "{name}"\n'
            f'membership_timeout = {TIMEOUT}\ngroup = "{group}"\npeer_token = "{ADMIN_TOKEN}"\n'
            f"[monitor]\nlisten_port = {self.heartbeat_port}\n"
            '[notifier]\naction_allow_networks = ["127.0.0.0/8"]\nretry_initial = 0.2\n'
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

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
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


def backend(url: str) -> str:
    if not port_open(BACKEND_PORTS[url]):
        pytest.fail(f"nothing listens for {url} (make services starts it)")
    return url


def restored(ctls: list[Controller]) -> list[Controller]:
    """Every controller running (one a test killed started again), the hosts shared."""
    for c in ctls:
        if not c.running():
            c.start()
    for c in ctls:
        wait_healthy(c.port, timeout=60)
    wait_for("the hosts shared out", lambda: shares_settled(ctls, 3), 20)
    return ctls


@contextmanager
def three_controllers(tmp: Path, store_url: str, coordination: str) -> Iterator[list[Controller]]:
    group = f"medevac-test-{uuid.uuid4().hex[:8]}"
    ctls = [Controller(tmp, f"ctl-{i}", store_url, group, coordination) for i in (1, 2, 3)]
    try:
        yield restored(ctls)
    finally:
        for c in ctls:  # all at once: each takes a second or so to stop
            c.terminate()
        codes = {c.name: c.stop() for c in ctls}
        logs = {c.name: c.log.read_text(errors="replace")[-3000:] for c in ctls}
    for name, code in codes.items():
        # SIGTERM: one still starting (a restart after a lapse) when the test stopped it.
        stopped = (0, -signal.SIGKILL, -signal.SIGTERM)
        assert code in stopped, f"{name} exited with {code}:\n{logs[name]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, store_url: str) -> Iterator[list[Controller]]:
    with three_controllers(tmp_path_factory.mktemp("cluster"), store_url, backend(REDIS)) as ctls:
        yield ctls


@pytest.fixture
def controllers(cluster: list[Controller]) -> list[Controller]:
    return restored(cluster)


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
    controllers: list[Controller],
) -> None:
    killed_and_reowned(controllers)


def test_with_etcd_a_killed_controllers_hosts_move_within_the_membership_timeout(
    tmp_path: Path,
) -> None:
    with (
        throwaway_postgres("medevac_ha") as own_store,  # not the Redis cluster's
        three_controllers(tmp_path, own_store, backend(ETCD)) as ctls,
    ):
        killed_and_reowned(ctls)


def killed_and_reowned(controllers: list[Controller]) -> None:
    victim = max(controllers, key=lambda c: len(c.owned()))
    theirs = victim.owned()
    survivors = [c for c in controllers if c is not victim]
    epochs = {h: e for c in controllers for h, e in (c.cluster() or {"hosts": {}})["hosts"].items()}
    kept = {h: c.name for c in survivors for h in c.owned()}
    assert victim.proc is not None
    killed = time.monotonic()
    os.kill(victim.proc.pid, signal.SIGKILL)
    wait_for("its hosts taken over", lambda: shares_settled(survivors, 2), TIMEOUT + 5)
    took = time.monotonic() - killed
    print(f"{len(theirs)} hosts re-owned {took * 1000:.0f} ms after SIGKILL (timeout {TIMEOUT} s)")
    assert took <= TIMEOUT + 1.0
    after = {
        h: (c.name, e)
        for c in survivors
        for h, e in (c.cluster() or {"hosts": {}})["hosts"].items()
    }
    assert all(after[h][1] > epochs[h] for h in theirs)  # each moved host: a new epoch
    assert all(after[h][0] == owner for h, owner in kept.items())  # the others stayed


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


def test_an_alarm_made_through_one_controller_is_known_to_all_within_a_second(
    controllers: list[Controller],
) -> None:
    first, second, third = controllers
    body = {
        "name": "vm-down",
        "type": "event",
        "alarm_actions": ["http://192.0.2.10/hook"],  # a documentation address
        "event_rule": {"event_type": "compute.instance.update", "query": []},
    }
    made = httpx.post(
        f"http://127.0.0.1:{first.port}/v2/alarms", json=body, headers=AUTH, timeout=5
    )
    assert made.status_code == 201, made.text
    alarm_id = made.json()["alarm_id"]
    started = time.monotonic()

    def known(c: Controller) -> bool:
        r = httpx.get(f"http://127.0.0.1:{c.port}/v2/alarms/{alarm_id}", headers=AUTH, timeout=5)
        return r.status_code == 200

    wait_for("the others know it", lambda: known(second) and known(third), 3)
    took = time.monotonic() - started
    print(f"an alarm made on one controller was known to the others in {took:.2f} s")
    gone = httpx.delete(f"http://127.0.0.1:{third.port}/v2/alarms/{alarm_id}", headers=AUTH)
    assert gone.status_code == 204
    wait_for("deleted everywhere", lambda: not known(first) and not known(second), 3)


def test_a_killed_controllers_pending_deliveries_are_sent_by_a_survivor(
    controllers: list[Controller], consumer: ConsumerProcess
) -> None:
    """An alarm fires on one controller while its consumer is down; that controller is
    killed; once the consumer is back, a survivor sends the delivery, once."""
    victim = max(controllers, key=lambda c: len(c.owned()))
    host = sorted(victim.owned())[0]
    survivors = [c for c in controllers if c is not victim]
    body = {
        "name": "host-down",
        "type": "event",
        "alarm_actions": [f"{consumer.url}/vnfm"],
        "event_rule": {"event_type": "compute.host.down", "query": []},
    }
    made = httpx.post(f"http://127.0.0.1:{victim.port}/v2/alarms", json=body, headers=AUTH)
    assert made.status_code == 201, made.text
    consumer.down()
    report = [
        {
            "id": "e1",
            "time": "2026-01-01T00:00:00Z",
            "type": "compute.host.down",
            "details": {"hostname": host, "status": "down"},
        }
    ]
    put = httpx.put(f"http://127.0.0.1:{victim.port}/events", json=report, headers=AUTH)
    assert put.status_code in (200, 202, 204), put.text

    def tried() -> bool:
        return bool(consumer.state().get("refused"))

    wait_for("the delivery tried against the consumer down", tried, 20)
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)
    consumer.up()
    got = wait_for("a survivor delivered it", consumer.received, 20)
    assert len({r["delivery_id"] for r in got}) == 1, got  # the one delivery
    assert consumer.state()["duplicates"] == 0
    adopted = [c for c in survivors if "took over 1 pending deliveries" in c.log.read_text()]
    assert len(adopted) == 1  # by one survivor
    gone = httpx.delete(
        f"http://127.0.0.1:{survivors[0].port}/v2/alarms/{made.json()['alarm_id']}", headers=AUTH
    )
    assert gone.status_code == 204


class Agent:
    """`medevac agent` for one host, sending to the given controllers."""

    def __init__(self, tmp: Path, host: str, to: list[Controller], via: int | None = None) -> None:
        key = tmp / f"{host}.key"
        if not key.exists():
            subprocess.run(
                [sys.executable, "-m", "medevac", "agent-key", host, "--output", str(key)],
                env={**os.environ, "MEDEVAC_CONFIG": str(to[0].config)},
                check=True,
                capture_output=True,
            )
        ports = [via] if via is not None else [c.heartbeat_port for c in to]
        targets = [a for p in ports for a in ("--controller", f"127.0.0.1:{p}")]
        command = ["medevac", "agent", "--host", host, "--key-file", str(key), *targets]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


RELAY = """
import select, socket, sys
ports = [int(p) for p in sys.argv[1:]]
inbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
inbound.bind(("127.0.0.1", 0))
paths = {}
for port in ports:
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    paths[out] = ("127.0.0.1", port)
cut, agent = set(), None
print(inbound.getsockname()[1], flush=True)
while True:
    ready = select.select([sys.stdin, inbound, *paths], [], [])[0]
    for sock in ready:
        if sock is sys.stdin:
            line = sys.stdin.readline()
            if not line:
                sys.exit(0)
            cut.add(int(line))
        elif sock is inbound:
            data, agent = inbound.recvfrom(65536)
            for out, to in paths.items():
                if to[1] not in cut:
                    out.sendto(data, to)
        else:
            data, _ = sock.recvfrom(65536)
            if paths[sock][1] not in cut and agent is not None:
                inbound.sendto(data, agent)  # a probe, back to the agent
"""


class Paths:
    """The network between one agent and the controllers: a UDP relay (a process of
    its own) with one path per controller, both ways, that can be cut. The agent
    sends to ``port``."""

    def __init__(self, controllers: list[Controller]) -> None:
        ports = [str(c.heartbeat_port) for c in controllers]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RELAY, *ports],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cut(self, c: Controller) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{c.heartbeat_port}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def verdicts(c: Controller, host: str) -> list[dict[str, Any]]:
    r = httpx.get(f"http://127.0.0.1:{c.port}/v1/verdicts", headers=AUTH, timeout=5)
    return [v for v in r.json()["verdicts"] if v["host"] == host]


def steady(c: Controller, host: str) -> bool:
    """``c`` sees ``host`` up, and has learned its 100 ms rhythm (a new detector's first
    gaps may be judged on a handful of samples)."""
    r = httpx.get(f"http://127.0.0.1:{c.port}/v1/hosts", headers=AUTH, timeout=5)
    [h] = [h for h in r.json()["hosts"] if h["name"] == host]
    return bool(h["state"] == "UP" and h["detector"]["mean_interval_s"] >= 0.08)


def heard(c: Controller, host: str) -> bool:
    r = httpx.get(
        f"http://127.0.0.1:{c.port}/v1/cluster/silence", params={"host": host}, headers=AUTH
    )
    silence = r.json()["silence_s"]
    return silence is not None and silence < 0.5


def test_a_host_silent_only_to_its_owner_gets_no_verdict_until_all_agree(
    controllers: list[Controller], tmp_path: Path
) -> None:
    """Last on the shared cluster: it leaves the host's incident open."""
    host = "compute-1"
    owner = next(c for c in controllers if host in c.owned())
    others = [c for c in controllers if c is not owner]
    paths = Paths(controllers)
    agent = Agent(tmp_path, host, controllers, via=paths.port)
    try:
        wait_for("every controller hears it", lambda: all(heard(c, host) for c in controllers), 20)
        wait_for("its owner knows its rhythm", lambda: steady(owner, host), 30)
        before = [
            v for c in controllers for v in verdicts(c, host) if v["kind"].startswith("HOST_")
        ]
        # Its path to its owner is cut: the owner finds it silent, the others do not.
        paths.cut(owner)
        wait_for("the owner no longer hears it", lambda: not heard(owner, host), 5)
        try:
            wait_for(
                "the owner asked and was told",
                lambda: "no verdict on compute-1: heard-elsewhere" in owner.log.read_text(),
                5,
            )
        except AssertionError:
            print([v["evidence"] for c in controllers for v in verdicts(c, host)])
            raise
        now = [v for c in controllers for v in verdicts(c, host) if v["kind"].startswith("HOST_")]
        assert now == before, [
            v["evidence"].get("quorum") for v in now
        ]  # none while others hear it
        assert all(heard(c, host) for c in others)
        # Silent to everyone: a majority agrees, and the owner alone gives the verdict.
        agent.kill()

        def given() -> list[dict[str, Any]]:
            return [
                v
                for c in controllers
                for v in verdicts(c, host)
                if v["kind"] == "HOST_UNREACHABLE" and v not in before
            ]

        got = wait_for("the verdict", given, 10)
        quorum = got[0]["evidence"]["quorum"]
        assert quorum["agreement"] == "agreed" and quorum["silent"] >= 2, quorum
        assert len(given()) == 1  # one verdict, by the host's owner alone
    finally:
        agent.kill()
        paths.close()


def test_a_controller_that_cannot_reach_the_backend_owns_nothing_and_says_so(
    tmp_path: Path, store_url: str
) -> None:
    """Its coordination backend does not answer: it never holds a lease, owns no host,
    shows itself isolated and logs the critical line (with its critical event)."""
    lonely = Controller(tmp_path, "lonely", store_url, "medevac-test-lonely", "redis://127.0.0.1:9")
    lonely.start()
    try:
        wait_healthy(lonely.port, timeout=60)

        def isolated() -> bool:
            view = lonely.cluster()
            return bool(view and view["isolated"] and not view["hosts"])

        wait_for("it shows itself isolated", isolated, 3 * TIMEOUT)
        view = lonely.cluster()
        assert view is not None and not view["lease_valid"] and view["claims"] == 0
        assert "cannot reach the coordination backend" in lonely.log.read_text()
    finally:
        code = lonely.stop()
    assert code == 0, lonely.log.read_text()[-3000:]

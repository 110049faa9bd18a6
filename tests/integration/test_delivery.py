"""Webhook delivery from the outbox: real HTTP to a consumer process, a real database
(each test on SQLite and on PostgreSQL, but SQLite's own fast path's)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from medevac.api.health import Health
from medevac.notifier.alarms import AlarmSpec
from medevac.notifier.delivery import DeliverySettings
from medevac.notifier.events import DELIVERY_FAILED, INSTANCE_UPDATE, Event
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.db import WriterBusy
from medevac.storage.records import AlarmStore, DeliveryRow, OutboxStore
from tests.conftest import ConsumerProcess, free_port, wait_for

pytestmark = pytest.mark.databases

FAST_RETRY = DeliverySettings(retry_initial=0.05, retry_max_interval=0.2, timeout=2.0)


def spec(server: str, url: str) -> AlarmSpec:
    return AlarmSpec.model_validate(
        {
            "name": f"{server}-failure",
            "alarm_actions": [url],
            "event_rule": {
                "event_type": INSTANCE_UPDATE,
                "query": [{"field": "traits.instance_id", "op": "eq", "value": server}],
            },
        }
    )


def failure(server: str) -> Event:
    return Event(
        INSTANCE_UPDATE, time.time(), {"instance_id": server, "state": "error", "project_id": "p1"}
    )


def notifier_for(db: Database, settings: DeliverySettings = FAST_RETRY) -> Notifier:
    store = AlarmStore(db)
    return Notifier(store, OutboxStore(db), settings)


async def until(what: str, check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_consumer_that_was_down_receives_everything_once(
    db: Database, consumer: ConsumerProcess
) -> None:
    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        servers = [str(uuid.uuid4()) for _ in range(20)]
        for s in servers:
            await n.create(spec(s, consumer.url + "/failure"), "p1")
        consumer.down()
        assert n.emit([failure(s) for s in servers]) == 20
        await until("retries", lambda: n.outbox.counters["retried"] >= 40, 10)
        assert consumer.received() == []
        consumer.up()
        await until("all delivered", lambda: n.outbox.counters["delivered"] == 20, 10)
        await n.outbox.close()

    asyncio.run(scenario())
    state = consumer.state()
    assert sorted(r["traits"]["instance_id"] for r in state["received"]) == sorted(
        {r["traits"]["instance_id"] for r in state["received"]}
    )
    assert len(state["received"]) == 20
    assert state["refused"] >= 40
    assert OutboxStore(db).counts() == {"delivered": 20}


def test_a_controller_without_its_lease_sends_no_retry_until_it_has_it_again(
    db: Database, consumer: ConsumerProcess
) -> None:
    """Several controllers: a controller whose membership lease ran out (paused, cut
    off) may be replaced, and its pending deliveries adopted by another: it retries
    none of them meanwhile. A fresh alarm still goes out at once (the controller's
    own isolation event is one)."""
    lease = [False]

    async def scenario() -> None:
        n = Notifier(AlarmStore(db), OutboxStore(db), FAST_RETRY, may_send=lambda: lease[0])
        await n.outbox.start()
        await n.create(spec("s1", consumer.url + "/failure"), "p1")
        await n.create(spec("s2", consumer.url + "/failure"), "p1")
        consumer.down()
        assert n.emit([failure("s1")]) == 1  # its first attempt is refused
        await until("its retry held", lambda: n.outbox.counters["held_without_lease"] == 1, 5)
        consumer.up()
        assert n.emit([failure("s2")]) == 1
        await until("the fresh alarm", lambda: n.outbox.counters["delivered"] == 1, 5)
        got = [r["traits"]["instance_id"] for r in consumer.received()]
        assert got == ["s2"], got  # s1's retry, due long before, was held
        lease[0] = True
        await until("the held retry", lambda: n.outbox.counters["delivered"] == 2, 5)
        await n.outbox.close()

    asyncio.run(scenario())
    assert sorted(r["traits"]["instance_id"] for r in consumer.received()) == ["s1", "s2"]


def test_a_slow_consumer_does_not_delay_another(db: Database, consumer: ConsumerProcess) -> None:
    slow = ConsumerProcess()
    try:
        slow.slow(1.5)

        async def scenario() -> float:
            n = notifier_for(db)
            await n.outbox.start()
            for i in range(10):
                await n.create(spec(f"s{i}", slow.url + "/failure"), "p1")
            await n.create(spec("fast", consumer.url + "/failure"), "p1")
            t0 = time.time()
            n.emit([failure(f"s{i}") for i in range(10)] + [failure("fast")])
            await until("the fast consumer", lambda: n.outbox.counters["delivered"] >= 1, 5)
            took = time.time() - t0
            await until("the slow ones", lambda: n.outbox.counters["delivered"] == 11, 10)
            await n.outbox.close()
            return took

        took = asyncio.run(scenario())
    finally:
        slow.stop()
    assert [r["traits"]["instance_id"] for r in consumer.received()] == ["fast"]
    assert took < 1.5, f"the fast consumer waited {took:.2f} s behind the slow one"


EMITTER = textwrap.dedent(
    """
    import asyncio, sys, time
    from medevac.storage import Database
    from tests.integration.test_delivery import failure, notifier_for, spec

    async def main(url: str, db_url: str, flag: str) -> None:
        n = notifier_for(Database(db_url))
        await n.outbox.start()
        for i in range(5):
            await n.create(spec(f"s{i}", url + "/failure"), "p1")
        n.emit([failure(f"s{i}") for i in range(5)])
        while n.outbox.counters["retried"] < 5:
            await asyncio.sleep(0.02)
        open(flag, "w").close()
        await asyncio.sleep(3600)

    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_alarms_pending_at_a_sigkill_are_delivered_after_restart(
    db: Database, consumer: ConsumerProcess, tmp_path: Path
) -> None:
    consumer.down()
    flag = tmp_path / "emitted"
    proc = subprocess.Popen(
        [sys.executable, "-c", EMITTER, consumer.url, str(db.url), str(flag)],
        # The tests and the same medevac as this process's (a checkout's src first).
        env={**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])},
    )
    try:
        wait_for("the emitter to have tried every alarm", flag.exists, 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert OutboxStore(db).counts().get("pending") == 5
    consumer.up()

    async def restart() -> int:
        n = notifier_for(db)
        await n.load()
        resumed = await n.outbox.start()
        await until("redelivery", lambda: n.outbox.counters["delivered"] == 5, 10)
        await n.outbox.close()
        return resumed

    assert asyncio.run(restart()) == 5
    got = consumer.received()
    assert sorted(r["alarm_name"] for r in got) == [f"s{i}-failure" for i in range(5)]
    assert OutboxStore(db).counts() == {"delivered": 5}


def test_a_delivery_gives_up_after_its_bound(
    db: Database, consumer: ConsumerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery given up is marked failed, goes to the audit log and becomes a
    critical ``medevac.delivery.failed`` event an operator's alarm fires on; the
    consumer is named by host and port only, never with its URL's credentials."""
    consumer.down()
    caplog.set_level(logging.DEBUG, logger="medevac")
    url = consumer.url.replace("http://", "http://vnfm:hunter2@") + "/failure"
    operator = Counting()

    async def scenario() -> dict[str, object]:
        server = await asyncio.start_server(operator.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        n = notifier_for(
            db, DeliverySettings(retry_initial=0.05, retry_max_interval=0.1, retry_for=0.5)
        )
        await n.outbox.start()
        try:
            await n.create(spec("s1", url), "p1")
            watch = AlarmSpec.model_validate(
                {
                    "name": "deliveries-failing",
                    "severity": "critical",
                    "alarm_actions": [f"http://127.0.0.1:{port}/ops"],
                    "event_rule": {"event_type": DELIVERY_FAILED},
                }
            )
            await n.create(watch, None)  # an operator's alarm
            n.emit([failure("s1")])
            await until("giving up", lambda: n.outbox.counters["failed"] == 1, 10)
            await until("the operator told", lambda: n.outbox.counters["delivered"] == 1, 10)
            return n.outbox.stats()
        finally:
            await n.close()
            server.close()

    stats = asyncio.run(scenario())
    assert stats["failed"] == 1
    # The consumer is named in the counters, by host and port: never its credentials.
    where = consumer.url.removeprefix("http://")
    assert list(stats["failing_consumers"]) == [where]  # type: ignore[call-overload]
    assert "hunter2" not in caplog.text and "abandoned" in caplog.text
    assert OutboxStore(db).counts() == {"failed": 1, "delivered": 1}
    told = OutboxStore(db).recent(limit=10)
    event = next(d.payload for d in told if d.status == "delivered")["reason_data"]["event"]
    traits = {name: value for name, _, value in event["traits"]}
    assert event["event_type"] == DELIVERY_FAILED
    assert traits["consumer"] == where and traits["attempts"] >= 2
    assert "hunter2" not in json.dumps(event)
    audit = [e for e in db.audit_events() if e.kind == "delivery.failed"]
    assert [(e.subject, e.actor) for e in audit] == [(where, "notifier")]
    assert "hunter2" not in json.dumps(audit[0].detail)


def test_alarm_fires_once_without_repeat_actions(db: Database, consumer: ConsumerProcess) -> None:
    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        await n.create(spec("s1", consumer.url + "/failure"), "p1")
        assert n.emit([failure("s1")]) == 1
        assert n.emit([failure("s1")]) == 0  # already in alarm
        await until("delivery", lambda: n.outbox.counters["delivered"] == 1, 10)
        await n.outbox.close()

    asyncio.run(scenario())
    assert [r["current"] for r in consumer.received()] == ["alarm"]


class Counting:
    """A bare HTTP/1.1 server on loopback that answers 200 and records, per
    connection, when it was accepted and the request lines that came on it."""

    def __init__(self) -> None:
        self.connections: list[tuple[float, list[str]]] = []

    def status(self) -> bytes:
        return b"200 OK"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: list[str] = []
        self.connections.append((time.monotonic(), requests))
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                length = next(
                    (
                        int(v)
                        for k, _, v in (x.partition(": ") for x in lines)
                        if k.lower() == "content-length"
                    ),
                    0,
                )
                await reader.readexactly(length)
                requests.append(lines[0])
                writer.write(b"HTTP/1.1 " + self.status() + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_a_suspected_hosts_consumers_are_connected_before_the_alarm(db: Database) -> None:
    """``prepare`` opens the connections the alarms would use (one per alarm, the
    pool's size at most per consumer); the webhooks then go over them, and consumers
    of other hosts are not touched."""

    async def scenario() -> None:
        near, far = Counting(), Counting()
        servers = [await asyncio.start_server(c.serve, "127.0.0.1", 0) for c in (near, far)]
        ports = [s.sockets[0].getsockname()[1] for s in servers]
        n = notifier_for(db, replace(FAST_RETRY, connections_per_consumer=3))
        await n.outbox.start()
        try:
            for i in range(2):
                await n.create(spec(f"s{i}", f"http://127.0.0.1:{ports[0]}/failure"), "p1")
            await n.create(spec("elsewhere", f"http://127.0.0.1:{ports[1]}/failure"), "p1")
            n.prepare([("instance_id", "s0")])
            await until("one opened", lambda: n.outbox.counters["warmed"] == 1, 5)
            n.prepare([("instance_id", f"s{i}") for i in range(2)] + [("host", "h1")])
            n.prepare([("instance_id", "s1")])  # again, meanwhile: nothing more opened
            await until("connections opened", lambda: n.outbox.counters["warmed"] == 2, 5)
            assert [r for _, r in near.connections] == [[], []]  # open, nothing sent
            assert far.connections == []
            n.emit([failure(f"s{i}") for i in range(2)])
            await until("delivered", lambda: n.outbox.counters["delivered"] == 2, 5)
            assert sorted(len(r) for _, r in near.connections) == [1, 1]  # no third
            # Getting ready again counts the idle connections and opens only what
            # more alarms could use, up to the pool's size, however many there are.
            for i in range(2, 10):
                await n.create(spec(f"s{i}", f"http://127.0.0.1:{ports[0]}/failure"), "p1")
            n.prepare([("instance_id", f"s{i}") for i in range(10)])
            await until("the pool filled", lambda: n.outbox.counters["warmed"] == 3, 5)
            await asyncio.sleep(0.2)
            assert n.outbox.counters["warmed"] == 3 and len(near.connections) == 3
        finally:
            await n.close()
            for s in servers:
                s.close()

    asyncio.run(scenario())


def test_a_consumer_that_cannot_be_reached_costs_only_a_count(db: Database) -> None:
    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        try:
            dead = f"http://127.0.0.1:{free_port()}/failure"  # nothing listens there
            await n.create(spec("s1", dead), "p1")
            await n.create(spec("s2", dead), "p1")
            n.prepare([("instance_id", "s1"), ("instance_id", "s2")])
            await until("counted", lambda: n.outbox.counters["warm_failed"] == 2, 5)
        finally:
            await n.close()

    asyncio.run(scenario())


async def warm_alarms(n: Notifier, url: str, count: int) -> list[str]:
    """``count`` servers with an alarm each sending to ``url``, and that consumer's
    connections opened as a suspected host's would be; returns the servers."""
    servers = [str(uuid.uuid4()) for _ in range(count)]
    for s in servers:
        await n.create(spec(s, url), "p1")
    n.prepare([("instance_id", s) for s in servers])
    opened = min(count, n.outbox.settings.connections_per_consumer)
    await until("warm", lambda: n.outbox.counters["warmed"] == opened, 5)
    return servers


def test_alarms_wait_for_a_busy_database_then_go_out_persisted(
    db: Database, consumer: ConsumerProcess
) -> None:
    """The first alarms are written on the event loop only when no other writer has
    the database; otherwise the outbox's thread waits its turn (SQLite's) or for the
    other writer's lock (PostgreSQL's): nothing leaves unwritten."""

    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        try:
            await n.create(spec("s1", consumer.url + "/failure"), "p1")
            hold = db.session()
            other = hold.__enter__()  # another writer of this process, mid-transaction
            if not db.local:  # no writers' turn: the other writer holds the outbox's table
                other.execute(text("LOCK TABLE deliveries IN EXCLUSIVE MODE"))
            try:
                n.emit([failure("s1")])
                await asyncio.sleep(0.3)
                assert consumer.received() == []  # not sent before it is written
            finally:
                hold.__exit__(None, None, None)
            await until("delivered", lambda: len(consumer.received()) == 1, 5)
            assert sum(OutboxStore(db).counts().values()) == 1  # it was in the outbox
        finally:
            await n.close()

    asyncio.run(scenario())


def test_a_controller_stopping_right_after_a_burst_keeps_every_alarm(db: Database) -> None:
    """Stopped the moment a burst was emitted (its rest not yet evaluated, nothing
    written): every webhook is in the outbox, for the next start to send."""

    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        url = f"http://127.0.0.1:{free_port()}/failure"  # nobody listens: nothing is sent
        servers = [f"s{i}" for i in range(10)]
        for s in servers:
            await n.create(spec(s, url), "p1")
        n.emit([failure(s) for s in servers], first_alarms_first=True)
        await n.close()

    asyncio.run(scenario())
    pending = OutboxStore(db).pending()
    assert sorted(r.payload["alarm_name"] for r in pending) == sorted(
        f"s{i}-failure" for i in range(10)
    )


@pytest.mark.databases("sqlite")  # the fast path of a local file (``Database.insert_now``)
def test_a_bursts_first_alarms_are_on_the_wire_before_the_emitter_goes_on(
    db: Database, consumer: ConsumerProcess
) -> None:
    """With the consumer's connections warm and the database free, the first chunk is
    written and its requests sent inside ``emit``: the consumer (its own process) has
    them while this loop is still busy with whatever follows the emit."""

    async def scenario() -> tuple[float, float]:
        n = notifier_for(db)
        await n.outbox.start()
        try:
            servers = await warm_alarms(n, consumer.url + "/failure", 10)
            n.emit([failure(s) for s in servers], first_alarms_first=True)
            time.sleep(0.5)  # noqa: ASYNC251 - the emitter's further work, holding the loop
            busy_until = time.time()
            await until("delivered", lambda: n.outbox.counters["delivered"] == 10, 10)
            return busy_until, time.time()
        finally:
            await n.close()

    busy_until, _ = asyncio.run(scenario())
    times = sorted(r["at"] for r in consumer.received())
    assert len(times) == 10
    assert times[1] < busy_until - 0.3  # the first two, during the emitter's work
    assert times[2] >= busy_until  # the rest once the loop was free again


@pytest.mark.databases("sqlite")  # ``Database.insert_now`` is SQLite's alone
def test_the_cheapest_insert_reads_back_as_the_orm_wrote_it(db: Database) -> None:
    """``record_deliveries_now`` (SQLite's fast path) stores exactly what the Session
    path stores; a failed insert commits nothing and leaves the path usable."""
    store = AlarmStore(db)
    n = Notifier(store, OutboxStore(db))
    alarm = asyncio.run(n.create(spec("s1", "http://127.0.0.1:9/x"), "p1"))
    payload = {"alarm_id": alarm.alarm_id, "reason_data": {"traits": [["state", 1, "error"]]}}
    at = 1_796_000_000.123456
    fast = [
        DeliveryRow(f"fast-{i}", alarm.alarm_id, "http://c/x", payload, at, "t1") for i in range(2)
    ]
    slow = [DeliveryRow("orm-0", alarm.alarm_id, "http://c/x", payload, at, "t1")]
    store.record_deliveries_now(fast)
    store.record_firing([], [], slow)
    got = {r.id: r for r in OutboxStore(db).pending()}
    assert set(got) == {"fast-0", "fast-1", "orm-0"}
    for key in ("fast-0", "fast-1"):
        assert replace(got[key], id="orm-0") == got["orm-0"]
    assert got["fast-0"].created_at == pytest.approx(at, abs=1e-6)
    # A duplicate id in the batch: nothing of it is committed.
    dup = [DeliveryRow("new", alarm.alarm_id, "http://c/x", payload, at), fast[0]]
    with pytest.raises(sqlite3.IntegrityError):
        store.record_deliveries_now(dup)
    store.record_deliveries_now([replace(dup[0], id="after")])
    assert {r.id for r in OutboxStore(db).pending()} == {"fast-0", "fast-1", "orm-0", "after"}
    # Another writer of this process has the turn: say so, never wait.
    with db.session(), pytest.raises(WriterBusy):
        store.record_deliveries_now([replace(dup[0], id="busy")])


def test_the_alarms_books_follow_their_webhooks_and_never_undo_a_newer_state(
    db: Database, consumer: ConsumerProcess
) -> None:
    """An alarm's new state and history are written once its webhook was tried, not
    before; a state the API sets meanwhile is the one the database keeps; a controller
    stopping before the webhooks were tried still writes them."""
    consumer.slow(0.6)
    store = AlarmStore(db)

    def stored(alarm_id: str) -> tuple[str, list[str]]:
        state = next(r.state for r in store.all() if r.alarm_id == alarm_id)
        return state, [h.type for h in store.history(alarm_id)]

    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        try:
            a1 = await n.create(spec("s1", consumer.url + "/failure"), "p1")
            a2 = await n.create(spec("s2", consumer.url + "/failure"), "p1")
            n.emit([failure("s1"), failure("s2")])
            assert n.get(a1.alarm_id).state == "alarm"  # in memory at once
            await asyncio.sleep(0.3)  # the webhooks are at the slow consumer
            assert stored(a1.alarm_id) == ("insufficient data", ["creation"])
            await n.set_state(a2.alarm_id, "ok", "operator")  # newer than the firing
            await until("delivered", lambda: n.outbox.counters["delivered"] == 2, 5)
            await until("books written", lambda: len(stored(a1.alarm_id)[1]) == 2, 5)
            assert stored(a1.alarm_id) == ("alarm", ["state transition", "creation"])
            assert stored(a2.alarm_id)[0] == "ok"
            # Stopping while a webhook is still at the consumer: its books are written.
            await n.set_state(a1.alarm_id, "ok", "operator")
            n.emit([failure("s1")])
        finally:
            await n.close()
        assert stored(a1.alarm_id)[0] == "alarm"

    asyncio.run(scenario())


def test_a_bursts_books_are_written_once_after_all_its_webhooks(
    db: Database, consumer: ConsumerProcess
) -> None:
    """The first chunk's books wait for the rest of the burst too: every delivery is
    committed and tried before the one write of the burst's states and history."""
    writes: list[tuple[int, int]] = []  # (states, deliveries) of each write, in order

    async def scenario() -> None:
        n = notifier_for(db)
        record = n.store.record_firing

        def spy(states: Any, changes: Any, deliveries: Any) -> None:
            states, deliveries = list(states), list(deliveries)
            writes.append((len(states), len(deliveries)))
            record(states, changes, deliveries)

        n.store.record_firing = spy  # type: ignore[method-assign]
        await n.outbox.start()
        try:
            servers = await warm_alarms(n, consumer.url + "/failure", 20)
            n.emit([failure(s) for s in servers], first_alarms_first=True)
            await until("delivered", lambda: n.outbox.counters["delivered"] == 20, 10)
            await until("books", lambda: any(w[0] for w in writes), 5)
        finally:
            await n.close()

    asyncio.run(scenario())
    # SQLite: the first 2 went in place (``insert_now``), without their books; elsewhere
    # they are the outbox thread's first write.
    first = [] if db.local else [(0, 2)]
    assert writes == [*first, (0, 18), (20, 0)]


class FailingWrites(AlarmStore):
    """An alarm store whose outbox writes fail while ``broken``: a database gone away."""

    broken = False

    def _check(self) -> None:
        if self.broken:
            raise OSError("disk I/O error")

    def record_firing(self, states: Any, changes: Any, deliveries: Any) -> None:
        self._check()
        super().record_firing(states, changes, deliveries)

    def record_deliveries_now(self, deliveries: Any) -> None:
        self._check()
        super().record_deliveries_now(deliveries)


def test_an_alarm_is_never_sent_before_the_outbox_has_recorded_it(
    db: Database, consumer: ConsumerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """While the outbox cannot write, its alarms wait unsent (a SIGKILL would lose an
    alarm sent unrecorded), the write is tried again, the outbox says it is unhealthy
    and a critical log says why; once the database answers, they are written, then sent."""
    caplog.set_level(logging.WARNING, logger="medevac")

    async def scenario() -> None:
        store = FailingWrites(db)
        n = Notifier(store, OutboxStore(db), FAST_RETRY)
        await n.outbox.start()
        try:
            await n.create(spec("s1", consumer.url + "/failure"), "p1")
            store.broken = True
            n.emit([failure("s1")])
            await until(
                "the write tried again, or the alarm sent",
                lambda: n.outbox.counters["write_failed"] >= 3 or bool(consumer.received()),
                10,
            )
            assert consumer.received() == []
            assert OutboxStore(db).counts() == {}
            health = Health(db, notifier=n)
            unhealthy = await health.health()
            assert not unhealthy["checks"]["outbox"]["ok"]
            assert unhealthy["reasons"] == [n.outbox.health()]
            assert "OSError" in unhealthy["reasons"][0]
            store.broken = False
            await until("delivered", lambda: n.outbox.counters["delivered"] == 1, 10)
            assert (await health.health())["reasons"] == []
            health.close()
        finally:
            await n.close()

    asyncio.run(scenario())
    assert len(consumer.received()) == 1
    assert OutboxStore(db).counts() == {"delivered": 1}
    assert [r.levelname for r in caplog.records if "refused a write" in r.message] == ["CRITICAL"]


def test_deleting_an_alarm_cancels_its_pending_deliveries(
    db: Database, consumer: ConsumerProcess
) -> None:
    """A deleted alarm's deliveries stop being retried and are cancelled in the outbox
    table: the consumer never gets them, and no restart sends them again."""
    consumer.down()

    async def scenario() -> None:
        n = notifier_for(db)
        await n.outbox.start()
        try:
            gone = await n.create(spec("s1", consumer.url + "/failure"), "p1")
            await n.create(spec("s2", consumer.url + "/failure"), "p1")
            n.emit([failure("s1")])
            await until("retried", lambda: n.outbox.counters["retried"] >= 2, 10)
            await n.delete(gone.alarm_id)
            assert OutboxStore(db).counts() == {"cancelled": 1}
            assert n.outbox.counters["cancelled"] == 1
            consumer.up()
            n.emit([failure("s2")])
            await until("the other alarm", lambda: n.outbox.counters["delivered"] == 1, 10)
        finally:
            await n.close()

    asyncio.run(scenario())
    assert [r["alarm_name"] for r in consumer.received()] == ["s2-failure"]
    assert OutboxStore(db).counts() == {"cancelled": 1, "delivered": 1}

    async def restart() -> int:
        n = notifier_for(db)
        try:
            await n.load()
            return await n.outbox.start()
        finally:
            await n.close()

    assert asyncio.run(restart()) == 0


class Unavailable(Counting):
    """``Counting``, answering 503 until ``up``."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False

    def status(self) -> bytes:
        return b"200 OK" if self.up else b"503 Service Unavailable"

    @property
    def arrived(self) -> int:
        return sum(len(requests) for _, requests in self.connections)


def test_an_open_circuit_sends_one_probe_at_a_time_and_closes_on_success(db: Database) -> None:
    """After ``breaker_failures`` failures in a row a consumer's circuit opens: its
    deliveries, new ones too, stop retrying each on its own and one probe at a time
    goes out; the first success closes it and every waiting delivery goes."""
    consumer = Unavailable()

    async def scenario() -> None:
        server = await asyncio.start_server(consumer.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        name = f"127.0.0.1:{port}"
        n = notifier_for(db, replace(FAST_RETRY, breaker_failures=3))
        out = n.outbox
        await out.start()
        try:
            servers = [f"s{i}" for i in range(21)]
            for s in servers:
                await n.create(spec(s, f"http://127.0.0.1:{port}/failure"), "p1")
            n.emit([failure(servers[0])])
            await until("the circuit open", lambda: out.counters["retried"] >= 3, 10)
            assert out.stats()["circuits"][name]["state"] in ("open", "half-open")
            failed, probes = out.counters["retried"], out.counters["probes"]
            n.emit([failure(s) for s in servers[1:]])
            await until("a few probes", lambda: out.counters["probes"] >= probes + 5, 10)
            # Every attempt since is a probe (give or take the one under way at either
            # end), and every request the consumer saw was a first three or a probe.
            tried = out.counters["probes"] - probes
            assert abs(out.counters["retried"] - failed - tried) <= 1
            assert consumer.arrived <= 3 + out.counters["probes"]
            assert out.stats()["circuits"][name]["state"] in ("open", "half-open")
            consumer.up = True
            await until("all delivered", lambda: out.counters["delivered"] == 21, 10)
            assert out.stats()["circuits"][name]["state"] == "closed"
        finally:
            await n.close()
            server.close()

    asyncio.run(scenario())
    assert OutboxStore(db).counts() == {"delivered": 21}

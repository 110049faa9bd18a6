"""The controller's heartbeat socket on loopback: a queue built while the loop was busy
is drained many datagrams per wake-up, nothing is lost or invented, oversized input is
dropped as malformed, a host's heartbeat signed with another host's key is dropped as
forged, and requests to agents still go out, signed with the host's own key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from medevac.monitor.hosts import HostMonitor
from medevac.monitor.protocol import Datagram, DatagramKind, decode, encode, host_key
from medevac.monitor.udp import MAX_BATCH, DrainingDatagramTransport, open_draining_endpoint
from tests.monitor_fakes import NoNova, PowerOn, Sink

KEY = b"s" * 32
HOSTS = [f"h{i}" for i in range(50)]


def heartbeat(host: str, seq: int, boot: bytes, key: bytes | None = None) -> bytes:
    """Signed with the host's own key unless ``key`` is given."""
    d = Datagram(DatagramKind.HEARTBEAT, host, seq, boot, time.time())
    return encode(d, key if key is not None else host_key(KEY, host))


@contextlib.asynccontextmanager
async def listening(
    hosts: list[str], *, accept_master_key: bool = False
) -> AsyncIterator[tuple[HostMonitor, DrainingDatagramTransport, socket.socket]]:
    """A monitor on the controller's heartbeat socket, and an agent's socket aimed at it."""
    monitor = HostMonitor(
        {h: "z" for h in hosts},
        KEY,
        Sink(),
        PowerOn(),
        NoNova(),
        accept_master_key=accept_master_key,
    )
    transport = await open_draining_endpoint(monitor, "127.0.0.1", 0)
    agent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        agent.bind(("127.0.0.1", 0))
        agent.settimeout(5)
        agent.connect(transport.get_extra_info("sockname"))
        yield monitor, transport, agent
    finally:
        agent.close()
        transport.close()


async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_a_backlog_is_drained_in_batches_and_nothing_is_lost() -> None:
    asyncio.run(_a_backlog_is_drained_in_batches_and_nothing_is_lost())


async def _a_backlog_is_drained_in_batches_and_nothing_is_lost() -> None:
    loop = asyncio.get_running_loop()
    turns = 0  # turns of the event loop, counted by a callback that runs once per turn
    per_turn: Counter[int] = Counter()  # datagrams read in each turn

    def tick() -> None:
        nonlocal turns
        turns += 1
        loop.call_soon(tick)

    async with listening(HOSTS) as (monitor, _, agent):
        receive = monitor.datagram_received

        def counted(data: bytes, addr: tuple[str, int]) -> None:
            per_turn[turns] += 1
            receive(data, addr)

        monitor.datagram_received = counted  # type: ignore[method-assign]
        boots = {h: os.urandom(16) for h in HOSTS}
        # Sent while the loop cannot run: all of it waits in the socket.
        for seq in range(1, 7):
            for h in HOSTS:
                agent.send(heartbeat(h, seq, boots[h]))
        queued = 6 * len(HOSTS)
        loop.call_soon(tick)
        await until(lambda: monitor.received == queued)
        await asyncio.sleep(0.05)
        assert monitor.received == queued
        assert sum(monitor.counters()["dropped"].values()) == 0
        # Whole batches per turn (asyncio's own transport reads one datagram a turn),
        # never more than a batch, so timers still run in a flood.
        assert max(per_turn.values()) == MAX_BATCH
        assert len(per_turn) == -(-queued // MAX_BATCH)


def test_oversized_and_forged_input_is_counted_and_the_next_heartbeat_arrives() -> None:
    asyncio.run(_oversized_and_forged_input_is_counted_and_the_next_heartbeat_arrives())


async def _oversized_and_forged_input_is_counted_and_the_next_heartbeat_arrives() -> None:
    async with listening(["h0"]) as (monitor, _, agent):
        good = heartbeat("h0", 1, os.urandom(16))
        agent.send(good + b"\0" * 4000)  # larger than any read
        agent.send(good[:-1] + bytes([good[-1] ^ 1]))
        agent.send(good)
        await until(lambda: monitor.received == 1)
        dropped = monitor.counters()["dropped"]
        assert dropped["malformed"] == 1 and dropped["bad_mac"] == 1


def test_requests_go_out_to_the_agent_and_close_stops_reading() -> None:
    asyncio.run(_requests_go_out_to_the_agent_and_close_stops_reading())


async def _requests_go_out_to_the_agent_and_close_stops_reading() -> None:
    async with listening(["h0"]) as (monitor, transport, agent):
        agent.send(heartbeat("h0", 1, os.urandom(16)))
        await until(lambda: monitor.received == 1)
        assert monitor.request_compute_restart("h0")
        data = await asyncio.to_thread(agent.recv, 2048)
        assert decode(data, host_key(KEY, "h0")).kind is DatagramKind.RESTART_COMPUTE
        transport.close()
        assert transport.is_closing()
        assert transport.get_extra_info("socket").fileno() == -1
        transport.sendto(b"x", ("127.0.0.1", 9))  # after close: ignored, no error


def test_a_heartbeat_signed_with_another_hosts_key_is_dropped_as_forged() -> None:
    asyncio.run(_a_heartbeat_signed_with_another_hosts_key_is_dropped_as_forged())


async def _a_heartbeat_signed_with_another_hosts_key_is_dropped_as_forged() -> None:
    async with listening(["h0", "h1"]) as (monitor, _, agent):
        # h0's key, h0's agent: it names h1. Then h0's own heartbeat, which arrives.
        agent.send(heartbeat("h1", 1, os.urandom(16), key=host_key(KEY, "h0")))
        agent.send(heartbeat("h0", 1, os.urandom(16)))
        await until(lambda: monitor.received == 1)
        assert monitor.counters()["dropped"]["bad_mac"] == 1
        states = {h["name"]: h["state"] for h in monitor.snapshot()}
        assert states == {"h0": "UP", "h1": "UNKNOWN"}


def test_the_master_key_itself_is_refused_unless_the_transition_is_on() -> None:
    asyncio.run(_the_master_key_itself_is_refused_unless_the_transition_is_on())


async def _the_master_key_itself_is_refused_unless_the_transition_is_on() -> None:
    async with listening(["h0", "h1"]) as (monitor, _, agent):
        agent.send(heartbeat("h1", 1, os.urandom(16), key=KEY))
        agent.send(heartbeat("h0", 1, os.urandom(16)))
        await until(lambda: monitor.received == 1)
        assert monitor.counters()["dropped"]["bad_mac"] == 1
        assert monitor.counters()["master_key_hosts"] == ["h1"]
    async with listening(["h0"], accept_master_key=True) as (monitor, _, agent):
        agent.send(heartbeat("h0", 1, os.urandom(16), key=KEY))
        await until(lambda: monitor.received == 1)
        assert monitor.counters()["master_key_hosts"] == ["h0"]
        # Its agent holds the master key: requests to it are signed with that.
        assert monitor.request_compute_restart("h0")
        data = await asyncio.to_thread(agent.recv, 2048)
        assert decode(data, KEY).kind is DatagramKind.RESTART_COMPUTE

"""The agent restarts nova-compute only on a genuine, fresh, first request, and not
too often; an agent not allowed to restart it never does."""

from __future__ import annotations

import asyncio
import os
import time

from medevac.agent.agent import Agent, AgentConfig
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode

KEY = b"k" * 32


class Probes:
    def checks(self) -> Checks:
        return Checks()


def request(
    seq: int, *, boot: bytes, host: str = "c1", key: bytes = KEY, age: float = 0.0
) -> bytes:
    d = Datagram(DatagramKind.RESTART_COMPUTE, host, seq, boot, time.time() - age)
    return encode(d, key)


def run(datagrams: list[bytes], *, allowed: bool = True, min_interval: float = 60.0) -> int:
    restarts: list[float] = []

    async def restart() -> None:
        restarts.append(time.monotonic())

    async def go() -> None:
        agent = Agent(
            AgentConfig(
                "c1",
                (("127.0.0.1", 9),),
                KEY,
                restart_compute=restart if allowed else None,
                restart_min_interval=min_interval,
            ),
            Probes(),
        )
        for data in datagrams:
            agent.datagram_received(data, ("127.0.0.1", 9))
            await asyncio.sleep(0)  # let a restart task run before the next request

    asyncio.run(go())
    return len(restarts)


def test_one_genuine_request_restarts_once() -> None:
    assert run([request(1, boot=os.urandom(16))]) == 1


def test_replays_forgeries_strangers_and_stale_requests_restart_nothing() -> None:
    boot = os.urandom(16)
    first = request(5, boot=boot)
    assert run([first, first]) == 1  # the same datagram again
    assert run([first, request(4, boot=boot)], min_interval=0) == 1  # an older sequence
    assert run([request(1, boot=boot, key=b"x" * 32)]) == 0  # not signed with the key
    assert run([request(1, boot=boot, host="c2")]) == 0  # for another host
    assert run([request(1, boot=boot, age=60)]) == 0  # sent a minute ago


def test_restarts_are_rate_limited_and_need_permission() -> None:
    boot = os.urandom(16)
    assert run([request(1, boot=boot), request(2, boot=boot)]) == 1
    assert run([request(1, boot=boot), request(2, boot=boot)], min_interval=0) == 2
    assert run([request(1, boot=boot)], allowed=False) == 0

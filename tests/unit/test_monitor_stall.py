"""The controller's own stall is not the hosts' silence: a monitor whose event loop
is blocked for longer than the hosts' deadlines suspects nobody, while a host that
really stops is still caught (and announced as suspect before its verdict)."""

from __future__ import annotations

import asyncio
import time

from medevac.monitor.hosts import HostMonitor, HostState
from tests.monitor_fakes import KEY, Agents, NoNova, PowerOn, Sink

HOSTS = [f"h{i}" for i in range(5)]


async def scenario(
    stall: float, stop: str | None, kind: type[HostMonitor] = HostMonitor
) -> tuple[HostMonitor, Sink]:
    sink = Sink()

    def suspected(host: str) -> None:
        sink.suspected.append((host, len(sink.verdicts)))  # and the verdicts so far

    monitor = kind({h: "z" for h in HOSTS}, KEY, sink, PowerOn(), NoNova(), on_suspect=suspected)
    agents = Agents(monitor, HOSTS)
    runner = asyncio.ensure_future(monitor.run())
    for _ in range(20):  # two seconds of regular heartbeats
        agents.beat(HOSTS)
        await asyncio.sleep(0.1)
    # The loop blocks (a long callback, a starved CPU): heartbeats keep being sent,
    # and reach the monitor only once it runs again.
    time.sleep(stall)  # noqa: ASYNC251 - blocking the loop is the point
    asyncio.get_running_loop().call_soon(agents.beat, HOSTS)
    for _ in range(10):
        await asyncio.sleep(0.1)
        agents.beat([h for h in HOSTS if h != stop])
    runner.cancel()
    return monitor, sink


def test_a_stall_of_the_controller_suspects_nobody() -> None:
    monitor, sink = asyncio.run(scenario(0.4, None))
    assert sink.verdicts == []
    assert sink.suspected == []
    assert monitor.stalls >= 1
    assert all(w.state is HostState.UP for w in monitor.hosts.values())


def test_a_host_that_stops_is_still_caught_after_a_stall() -> None:
    _, sink = asyncio.run(scenario(0.4, "h3"))
    assert [(v.kind.value, v.host) for v in sink.verdicts] == [("HOST_UNREACHABLE", "h3")]
    assert sink.suspected == [("h3", 0)]  # told before its verdict, once


class SlowToPostpone(HostMonitor):
    """Moving every deadline takes longer than a stall, as with tens of thousands of
    hosts on a busy machine (30,000 hosts: about 100 ms)."""

    def _postpone_deadlines(self, by: float) -> None:
        super()._postpone_deadlines(by)
        time.sleep(0.08)  # the work itself, blocking the loop as it does


def test_postponing_slower_than_a_stall_postpones_once_and_still_judges() -> None:
    monitor, sink = asyncio.run(scenario(0.4, "h3", SlowToPostpone))
    assert monitor.stalls == 1  # its own work was not taken for another stall
    assert [(v.kind.value, v.host) for v in sink.verdicts] == [("HOST_UNREACHABLE", "h3")]

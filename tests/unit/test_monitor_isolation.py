"""A partition of the observer heals host by host, as it began: the hosts that come
back a little after the first are not judged alone meanwhile, while a host that stays
silent a whole isolation window after its zone came back still gets its verdict."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from medevac.monitor.hosts import HostMonitor, HostState, MonitorSettings
from medevac.monitor.verdicts import VerdictKind
from tests.monitor_fakes import KEY, Agents, NoNova, PowerOn, Sink

HOSTS = [f"h{i}" for i in range(5)]
CUT = HOSTS[:3]  # most of the zone
WINDOW = 1.0


async def partition_then_heal(returns: dict[str, float]) -> tuple[HostMonitor, Sink]:
    """Cut three of five hosts off for longer than the isolation window, then let each
    come back after its own delay (seconds after the first); a host not named stays."""
    sink = Sink()
    settings = MonitorSettings(isolation_window=WINDOW)
    monitor = HostMonitor({h: "z" for h in HOSTS}, KEY, sink, PowerOn(), NoNova(), settings)
    agents = Agents(monitor, HOSTS)
    runner = asyncio.ensure_future(monitor.run())
    loop = asyncio.get_running_loop()

    async def beats(seconds: float, hosts: Callable[[], list[str]]) -> None:
        until = loop.time() + seconds
        while loop.time() < until:
            agents.beat(hosts())
            await asyncio.sleep(0.1)

    await beats(2.0, lambda: HOSTS)
    await beats(WINDOW * 1.5, lambda: HOSTS[3:])
    assert all(monitor.hosts[h].state is HostState.ISOLATED for h in CUT)
    healed_at = loop.time()
    await beats(
        WINDOW * 2.5,
        lambda: HOSTS[3:] + [h for h, d in returns.items() if loop.time() - healed_at >= d],
    )
    runner.cancel()
    return monitor, sink


def host_verdicts(sink: Sink) -> list[tuple[str, str]]:
    return [(v.kind.value, v.host) for v in sink.verdicts if v.kind.host_lost]


def test_hosts_that_come_back_soon_after_their_zone_get_no_verdict() -> None:
    # The last host returns 0.6 s after the first: well past a confirmation (0.1 s),
    # within the window.
    monitor, sink = asyncio.run(partition_then_heal({"h0": 0.0, "h1": 0.3, "h2": 0.6}))
    assert [v.kind for v in sink.verdicts] == [VerdictKind.OBSERVER_ISOLATED]
    assert all(w.state is HostState.UP for w in monitor.hosts.values())


def test_a_host_still_silent_a_window_after_its_zone_is_judged_alone() -> None:
    monitor, sink = asyncio.run(partition_then_heal({"h0": 0.0, "h1": 0.2}))
    assert sink.verdicts[0].kind is VerdictKind.OBSERVER_ISOLATED
    assert host_verdicts(sink) == [("HOST_UNREACHABLE", "h2")]
    assert monitor.hosts["h2"].state is HostState.LOST

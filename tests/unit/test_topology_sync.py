"""The periodic topology resync backs off a cloud that cannot list, and recovers."""

from __future__ import annotations

import asyncio

import pytest

from medevac.cloud.errors import CloudUnavailable
from medevac.cloud.models import Port, Server
from medevac.inspector import sync
from medevac.inspector.topology import ServerInfo, Topology


class FlakyCloud:
    """Fails the listings of the calls numbered in ``failing`` (0-based)."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.calls = 0

    async def list_servers(self, host: str | None = None) -> list[Server]:
        n, self.calls = self.calls, self.calls + 1
        if n in self.failing:
            raise CloudUnavailable("no answer within 30 s", operation="list servers")
        return []

    async def list_ports(self, host: str | None = None) -> list[Port]:
        return []

    async def network_physnets(self) -> dict[str, str | None]:
        return {}


def test_failures_back_off_to_the_interval_and_success_resets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 9:
            raise asyncio.CancelledError

    monkeypatch.setattr(sync.asyncio, "sleep", sleep)
    cloud = FlakyCloud(failing={0, 1, 2, 3, 4, 6, 7})
    s = sync.TopologySync(cloud, Topology(), interval=60.0)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(s.run())
    # Five failures: 5, 10, 20, 40, then the interval; a success: the interval;
    # failing again starts from 5 s, not from where the last outage left off.
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 5.0, 10.0, 60.0]
    assert s.error is None and s.ready.is_set()


def server(sid: str, host: str) -> ServerInfo:
    return ServerInfo(sid, sid, "p1", host, "active", None, {})


def test_a_rebuild_lets_the_loop_run_and_answers_from_the_old_cache_until_done() -> None:
    topo = Topology()
    topo.replace([server("old", "h0")], [], at=1.0)
    fresh = [server(f"s{i}", f"h{i % 7 + 1}") for i in range(20_000)]
    seen_meanwhile: list[list[str]] = []

    async def go() -> None:
        rebuild = asyncio.create_task(topo.rebuild(fresh, [], at=2.0, slice_s=0.0))
        while not rebuild.done():  # another task on the same loop, as the monitor is
            seen_meanwhile.append([s.id for s in topo.servers_on("h0")])
            await asyncio.sleep(0)
        await rebuild

    asyncio.run(go())
    # Every 256 servers put, the loop ran something else; the old cache answered.
    assert len(seen_meanwhile) >= 20_000 // 256
    assert all(ids == ["old"] for ids in seen_meanwhile)
    assert topo.servers_on("h0") == [] and topo.stats()["servers"] == 20_000
    assert topo.synced_at == 2.0


def test_notifications_during_a_rebuild_survive_it() -> None:
    """The listing may predate a move or a delete that Nova notified meanwhile."""
    topo = Topology()
    listing = [server(f"s{i}", "h1") for i in range(5_000)]

    async def go() -> None:
        rebuild = asyncio.create_task(topo.rebuild(listing, [], at=2.0, slice_s=0.0))
        await asyncio.sleep(0)  # the build has begun
        assert not rebuild.done()
        topo.on_instance_notification(
            "instance.update", {"uuid": "s1", "host": "h2", "state": "active"}
        )
        topo.on_instance_notification("instance.delete.end", {"uuid": "s2"})
        with pytest.raises(RuntimeError):  # one at a time
            await topo.rebuild([], [], at=3.0)
        await rebuild

    asyncio.run(go())
    assert [s.id for s in topo.servers_on("h2")] == ["s1"]
    assert topo.server("s2") is None and len(topo.servers_on("h1")) == 4_998
    topo.on_instance_notification("instance.update", {"uuid": "s3", "host": "h2"})
    assert topo._journal is None  # no journal kept between rebuilds

"""The periodic topology resync backs off a cloud that cannot list, and recovers."""

from __future__ import annotations

import asyncio

import pytest

from medevac.cloud.errors import CloudUnavailable
from medevac.cloud.models import Port, Server
from medevac.inspector import sync
from medevac.inspector.topology import Topology


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

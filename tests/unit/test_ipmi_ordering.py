"""The IPMI client's rule for calls abandoned at their deadline while their thread is
still blocked in pyghmi: a power change waits for an abandoned one, a read does not,
and a client holds at most two threads."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from medevac.bmc.ipmi import BmcUnreachable, IpmiClient, IpmiTarget


class FakeCommand:
    def __init__(self) -> None:
        self.ipmi_session = SimpleNamespace(logged=0, broken=False)


def client(timeout: float = 0.2) -> IpmiClient:
    c = IpmiClient(IpmiTarget("192.0.2.1", 623, "admin", "pw"), timeout=timeout)
    command = FakeCommand()
    c._get_command = lambda abandon: command  # type: ignore[method-assign]
    return c


class Bmc:
    """Actions that record what reached the BMC, some held until released."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.release = threading.Event()

    def blocked(self, name: str) -> Any:
        def action(command: Any) -> str:
            self.release.wait(10)
            self.reached.append(name)
            return name

        return action

    def quick(self, name: str) -> Any:
        def action(command: Any) -> str:
            self.reached.append(name)
            return name

        return action


def test_a_read_does_not_wait_for_an_abandoned_power_change() -> None:
    async def scenario() -> None:
        c, bmc = client(), Bmc()
        with pytest.raises(BmcUnreachable, match="no answer within"):
            await c._call("power off", bmc.blocked("off"), changes_power=True)
        assert await c._call("read", bmc.quick("read"), changes_power=False) == "read"
        bmc.release.set()

    asyncio.run(scenario())


def test_a_power_change_waits_for_an_abandoned_one_and_never_overtakes_it() -> None:
    async def scenario() -> list[str]:
        c, bmc = client(), Bmc()
        with pytest.raises(BmcUnreachable, match="no answer within"):
            await c._call("power off", bmc.blocked("off"), changes_power=True)
        with pytest.raises(BmcUnreachable, match="an earlier request is still pending"):
            await c._call("power on", bmc.quick("on"), changes_power=True)
        assert bmc.reached == []  # the on was not sent
        bmc.release.set()
        # within its deadline, the next power change waits for the off to be over
        assert await c._call("power on", bmc.quick("on"), changes_power=True) == "on"
        return bmc.reached

    assert asyncio.run(scenario()) == ["off", "on"]


def test_a_power_change_does_not_wait_for_an_abandoned_read() -> None:
    async def scenario() -> None:
        c, bmc = client(), Bmc()
        with pytest.raises(BmcUnreachable, match="no answer within"):
            await c._call("read", bmc.blocked("read"), changes_power=False)
        assert await c._call("power off", bmc.quick("off"), changes_power=True) == "off"
        bmc.release.set()

    asyncio.run(scenario())


def test_at_most_two_threads_per_client() -> None:
    async def scenario() -> None:
        c, bmc = client(), Bmc()
        for _ in range(2):
            with pytest.raises(BmcUnreachable, match=r"no answer within 0\.2 s$"):
                await c._call("read", bmc.blocked("read"), changes_power=False)
        with pytest.raises(BmcUnreachable, match="an earlier request is still pending"):
            await c._call("read", bmc.quick("third"), changes_power=False)
        assert "third" not in bmc.reached
        bmc.release.set()
        assert await c._call("read", bmc.quick("fourth"), changes_power=False) == "fourth"

    asyncio.run(scenario())

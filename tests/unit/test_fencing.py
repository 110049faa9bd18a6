"""Fencing decides "confirmed off" only on the BMC's word, within its bound."""

from __future__ import annotations

import asyncio

from medevac.bmc.ipmi import BmcUnreachable, PowerState
from medevac.recovery.fence import BmcFencer, FenceResult


class Bmc:
    def __init__(self, states: list[PowerState | Exception], off_fails: bool = False) -> None:
        self.states = states
        self.off_fails = off_fails
        self.offs = 0

    async def power_off(self) -> None:
        self.offs += 1
        if self.off_fails:
            raise BmcUnreachable("no answer")

    async def close(self) -> None:
        pass

    async def power_state(self) -> PowerState:
        value = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(value, Exception):
            raise value
        return value


def fence(bmc: Bmc, count: int = 5) -> FenceResult:
    fencer = BmcFencer({"h1": bmc}, check_interval=0.001, check_max_count=count)
    return asyncio.run(fencer.fence("h1"))


def test_confirmed_when_the_bmc_reports_off() -> None:
    bmc = Bmc([PowerState.ON, PowerState.ON, PowerState.OFF])
    result = fence(bmc)
    assert result.confirmed and result.reads == 3
    assert bmc.offs == 1


def test_not_confirmed_while_power_stays_on() -> None:
    result = fence(Bmc([PowerState.ON]), count=8)
    assert not result.confirmed
    assert "after 8 reads" in result.detail


def test_an_unreachable_bmc_never_counts_as_fenced() -> None:
    result = fence(Bmc([BmcUnreachable("timeout")], off_fails=True))
    assert not result.confirmed
    assert "timeout" in result.detail


def test_a_dropped_power_off_is_sent_again() -> None:
    bmc = Bmc([PowerState.ON] * 5 + [PowerState.OFF])
    result = fence(bmc, count=10)
    assert result.confirmed
    assert bmc.offs >= 2


def test_hosts_without_a_bmc_are_not_fenced() -> None:
    result = asyncio.run(BmcFencer({}).fence("h9"))
    assert not result.confirmed
    assert "no BMC" in result.detail

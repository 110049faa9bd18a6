"""The Redfish driver (sushy) against the lab's Redfish BMC over loopback HTTP:
power read and ForceOff, fencing, and each failure with a clear error and no secret."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from medevac.bmc.ipmi import BmcAuthError, BmcError, BmcUnreachable, PowerState
from medevac.bmc.redfish import RedfishClient, RedfishTarget
from medevac.lab.redfish_emulator import RedfishBmc
from medevac.recovery.fence import BmcFencer

PASSWORD = "s3cret-Redfish-pw"


class Host:
    """The power hooks of one lab host."""

    def __init__(self) -> None:
        self.on = True
        self.calls: list[str] = []

    def power_state(self, host: str) -> bool:
        return self.on

    def power_off(self, host: str) -> None:
        self.calls.append("off")
        self.on = False

    def power_on(self, host: str) -> None:
        self.calls.append("on")
        self.on = True

    def power_reset(self, host: str) -> None:
        self.calls.append("reset")

    def power_soft(self, host: str) -> None:
        self.calls.append("soft")
        self.on = False


@pytest.fixture
def bmc() -> Iterator[tuple[RedfishBmc, Host]]:
    host = Host()
    server = RedfishBmc("node7", "admin", PASSWORD, host)
    server.start()
    try:
        yield server, host
    finally:
        server.stop()


def client(server: RedfishBmc, password: str = PASSWORD, **kw: object) -> RedfishClient:
    url = f"http://127.0.0.1:{server.spec.port}"
    return RedfishClient(RedfishTarget(url, "admin", password, **kw), timeout=2)  # type: ignore[arg-type]


def test_reads_power_and_forces_it_off(bmc: tuple[RedfishBmc, Host]) -> None:
    server, host = bmc

    async def go() -> tuple[PowerState, PowerState]:
        c = client(server)
        before = await c.power_state()
        await c.power_off()
        after = await c.power_state()
        await c.power_on()
        await c.close()
        return before, after

    assert asyncio.run(go()) == (PowerState.ON, PowerState.OFF)
    assert host.calls == ["off", "on"]


def test_a_named_system_is_used_and_an_unknown_one_is_an_error(
    bmc: tuple[RedfishBmc, Host],
) -> None:
    server, _ = bmc
    assert asyncio.run(client(server, system="node7").power_state()) is PowerState.ON
    with pytest.raises(BmcError) as err:
        asyncio.run(client(server, system="node8").power_state())
    assert "HTTP 404" in str(err.value)


def test_fencing_through_redfish_confirms_power_off(bmc: tuple[RedfishBmc, Host]) -> None:
    server, host = bmc
    fencer = BmcFencer({"node7": client(server)}, check_interval=0.05, check_max_count=5)
    result = asyncio.run(fencer.fence("node7"))
    assert result.confirmed and result.detail == "BMC reports power off"
    assert host.calls == ["off"]


def test_wrong_password_is_an_auth_error_without_the_secret(
    bmc: tuple[RedfishBmc, Host],
) -> None:
    server, host = bmc
    with pytest.raises(BmcAuthError) as err:
        asyncio.run(client(server, password="wrong-one").power_off())
    assert "credentials refused" in str(err.value)
    assert "wrong-one" not in repr(err.value) and PASSWORD not in repr(err.value)
    assert host.calls == []


def test_an_unreachable_bmc_means_not_fenced(bmc: tuple[RedfishBmc, Host]) -> None:
    server, host = bmc
    server.reachable = False
    with pytest.raises(BmcUnreachable):
        asyncio.run(client(server).power_state())
    fencer = BmcFencer({"node7": client(server)}, check_interval=0.05, check_max_count=3)
    result = asyncio.run(fencer.fence("node7"))
    assert not result.confirmed
    assert host.on and host.calls == []
    assert all(PASSWORD not in e for e in result.errors)


def test_a_dead_port_is_unreachable() -> None:
    server = RedfishBmc("node9", "admin", PASSWORD, Host())
    port = server.spec.port
    server.server.server_close()  # never started: nothing listens
    c = RedfishClient(RedfishTarget(f"http://127.0.0.1:{port}", "admin", PASSWORD), timeout=1)
    with pytest.raises(BmcUnreachable):
        asyncio.run(c.power_state())

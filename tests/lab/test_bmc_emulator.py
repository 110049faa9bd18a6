"""The emulated BMC farm, driven by the product's IPMI client and by ipmitool."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from medevac.bmc.ipmi import (
    BmcAuthError,
    BmcError,
    BmcUnreachable,
    IpmiClient,
    IpmiTarget,
    PowerState,
)
from medevac.config import load_settings
from medevac.lab.bmc_emulator import BmcFarm, BmcSpec
from medevac.recovery.fence import PowerControl
from medevac.service import bmc_thread_pool, build_bmc_clients

USER = "admin"
PASSWORD = "s3cret-Pa55"


class MemoryHooks:
    """Power state of simulated hosts, kept in memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.on: dict[str, bool] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_state_for: set[str] = set()

    def _record(self, action: str, host: str) -> None:
        with self.lock:
            self.calls.append((action, host))

    def power_state(self, host: str) -> bool:
        if host in self.fail_state_for:
            raise RuntimeError("simulated hypervisor failure")
        with self.lock:
            return self.on.get(host, True)

    def power_off(self, host: str) -> None:
        self._record("off", host)
        with self.lock:
            self.on[host] = False

    def power_on(self, host: str) -> None:
        self._record("on", host)
        with self.lock:
            self.on[host] = True

    def power_reset(self, host: str) -> None:
        self._record("reset", host)
        with self.lock:
            self.on[host] = True

    def power_soft(self, host: str) -> None:
        self._record("soft", host)
        with self.lock:
            self.on[host] = False


@pytest.fixture
def hooks() -> MemoryHooks:
    return MemoryHooks()


@pytest.fixture
def farm(hooks: MemoryHooks) -> Iterator[BmcFarm]:
    farm = BmcFarm(hooks)
    farm.start()
    yield farm
    farm.stop()


@pytest.fixture
def spec(farm: BmcFarm) -> BmcSpec:
    return farm.add("compute-1", USER, PASSWORD)


def target(
    spec: BmcSpec, *, username: str | None = None, password: str | None = None
) -> IpmiTarget:
    return IpmiTarget(
        address="127.0.0.1",
        port=spec.port,
        username=spec.username if username is None else username,
        password=spec.password if password is None else password,
    )


async def wait_until(predicate: Callable[[], Awaitable[bool]], deadline: float) -> None:
    """Poll ``predicate`` until it holds, failing after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        if await predicate():
            return
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline} s")
        await asyncio.sleep(0.05)


def test_power_read_off_on_reaches_the_hooks(spec: BmcSpec, hooks: MemoryHooks) -> None:
    async def scenario() -> None:
        client = IpmiClient(target(spec))
        try:
            assert await client.power_state() is PowerState.ON
            await client.power_off()
            assert hooks.on["compute-1"] is False
            assert await client.power_state() is PowerState.OFF
            await client.power_on()
            assert await client.power_state() is PowerState.ON
        finally:
            await client.close()

    asyncio.run(scenario())
    assert hooks.calls == [("off", "compute-1"), ("on", "compute-1")]


def test_power_off_when_already_off_does_not_fail(spec: BmcSpec, hooks: MemoryHooks) -> None:
    hooks.on["compute-1"] = False

    async def scenario() -> None:
        client = IpmiClient(target(spec))
        await client.power_off()
        assert await client.power_state() is PowerState.OFF

    asyncio.run(scenario())


def test_wrong_password_is_refused_quickly(spec: BmcSpec, hooks: MemoryHooks) -> None:
    async def scenario() -> None:
        client = IpmiClient(target(spec, password="wrong-password"), timeout=5.0)
        started = time.monotonic()
        with pytest.raises(BmcAuthError) as info:
            await client.power_off()
        assert time.monotonic() - started < 2.0
        message = str(info.value)
        assert f"127.0.0.1:{spec.port}" in message
        assert "wrong-password" not in message and PASSWORD not in message

    asyncio.run(scenario())
    assert hooks.calls == []


def test_unknown_user_is_refused_quickly(spec: BmcSpec) -> None:
    async def scenario() -> None:
        client = IpmiClient(target(spec, username="nobody"), timeout=5.0)
        started = time.monotonic()
        with pytest.raises(BmcAuthError):
            await client.power_state()
        assert time.monotonic() - started < 2.0

    asyncio.run(scenario())


def test_unreachable_bmc_fails_within_the_client_deadline(farm: BmcFarm, spec: BmcSpec) -> None:
    async def scenario() -> None:
        # log in with a generous deadline (pyghmi shares the session per BMC and user)
        assert await IpmiClient(target(spec), timeout=5.0).power_state() is PowerState.ON
        client = IpmiClient(target(spec), timeout=1.0)
        assert await client.power_state() is PowerState.ON

        farm.set_reachable("compute-1", False)
        for _ in range(2):  # a request in flight, then the next call
            started = time.monotonic()
            with pytest.raises(BmcUnreachable) as info:
                await client.power_state()
            assert time.monotonic() - started < 1.5
            assert f"127.0.0.1:{spec.port}" in str(info.value)

        fresh = IpmiClient(target(spec), timeout=1.0)
        started = time.monotonic()
        with pytest.raises(BmcUnreachable):
            await fresh.power_off()
        assert time.monotonic() - started < 1.5

        farm.set_reachable("compute-1", True)

        async def answers() -> bool:
            # The abandoned power_off may still land once the BMC answers again:
            # IPMI gives no way to recall a request, so either state is fine here.
            try:
                await client.power_state()
            except BmcUnreachable:
                return False
            return True

        await wait_until(answers, deadline=15.0)

    asyncio.run(scenario())


def test_handler_errors_are_answered_and_do_not_stop_the_farm(
    farm: BmcFarm, spec: BmcSpec, hooks: MemoryHooks
) -> None:
    other = farm.add("compute-2", USER, PASSWORD)
    hooks.fail_state_for.add("compute-1")

    async def scenario() -> None:
        broken = IpmiClient(target(spec), timeout=3.0)
        with pytest.raises(BmcError) as info:
            await broken.power_state()
        assert not isinstance(info.value, BmcUnreachable)
        hooks.fail_state_for.clear()
        assert await IpmiClient(target(spec)).power_state() is PowerState.ON
        assert await IpmiClient(target(other)).power_state() is PowerState.ON

    asyncio.run(scenario())


def test_garbage_and_refused_cipher_suite(spec: BmcSpec) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        address = ("127.0.0.1", spec.port)
        sock.sendto(b"\x06\x00\xff\x07" + b"\xff" * 40, address)
        sock.sendto(b"junk", address)
        # RMCP+ open session request proposing cipher suite 17 (SHA-256 algorithms)
        request = bytes([0x42, 4, 0, 0]) + struct.pack("<I", 0xA0A1A2A3)
        for kind, algorithm in ((0, 3), (1, 4), (2, 1)):
            request += bytes([kind, 0, 0, 8, algorithm, 0, 0, 0])
        packet = b"\x06\x00\xff\x07\x06\x10" + struct.pack("<IIH", 0, 0, len(request)) + request
        sock.sendto(packet, address)
        answer, _ = sock.recvfrom(1024)
    assert answer[5] == 0x11  # open session response
    payload = answer[16:]
    assert payload[0] == 0x42 and payload[1] == 0x11  # no matching cipher suite
    assert payload[4:8] == struct.pack("<I", 0xA0A1A2A3)


def test_twenty_bmcs_with_concurrent_clients(farm: BmcFarm, hooks: MemoryHooks) -> None:
    specs = [farm.add(f"compute-{i:02d}", f"user{i}", f"pw-{i}") for i in range(20)]

    async def exercise(client: IpmiClient) -> None:
        assert await client.power_state() is PowerState.ON
        await client.power_off()
        assert await client.power_state() is PowerState.OFF
        await client.power_on()
        assert await client.power_state() is PowerState.ON

    async def observe(client: IpmiClient) -> None:
        for _ in range(5):
            assert await client.power_state() in (PowerState.ON, PowerState.OFF)

    async def scenario() -> float:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 * len(specs)) as pool:
            # two clients per BMC at once: one changes the power, one watches it
            changers = [IpmiClient(target(s), timeout=5.0, executor=pool) for s in specs]
            watchers = [IpmiClient(target(s), timeout=5.0, executor=pool) for s in specs]
            started = time.monotonic()
            await asyncio.gather(*map(exercise, changers), *map(observe, watchers))
            elapsed = time.monotonic() - started
            await asyncio.gather(*(c.close() for c in changers + watchers))
            return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 10.0
    for s in specs:
        assert [call for call in hooks.calls if call[1] == s.host] == [
            ("off", s.host),
            ("on", s.host),
        ]
    assert len(farm.specs()) == 20


def test_stop_releases_the_ports(hooks: MemoryHooks) -> None:
    farm = BmcFarm(hooks)
    specs = [farm.add(f"compute-{i}", USER, PASSWORD) for i in range(3)]
    farm.start()
    assert asyncio.run(IpmiClient(target(specs[0])).power_state()) is PowerState.ON
    started = time.monotonic()
    farm.stop()
    assert time.monotonic() - started < 5.0
    assert not [t for t in threading.enumerate() if t.name == "bmc-farm"]
    for s in specs:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", s.port))
    with pytest.raises(RuntimeError):
        farm.add("late", USER, PASSWORD)


def test_fixed_port_and_loopback_only(hooks: MemoryHooks) -> None:
    with pytest.raises(ValueError):
        BmcFarm(hooks, address="0.0.0.0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    farm = BmcFarm(hooks)
    try:
        spec = farm.add("compute-1", USER, PASSWORD, port=port)
        assert spec.port == port
        with pytest.raises(ValueError):
            farm.add("compute-1", USER, PASSWORD)
        farm.start()
        assert asyncio.run(IpmiClient(target(spec)).power_state()) is PowerState.ON
    finally:
        farm.stop()


def test_secrets_stay_out_of_reprs(spec: BmcSpec) -> None:
    t = target(spec)
    assert PASSWORD not in repr(t)
    assert PASSWORD not in repr(spec)
    assert PASSWORD not in repr(IpmiClient(t))


# -- Debian's ipmitool as a real client ------------------------------------------------

IPMITOOL = shutil.which("ipmitool")
needs_ipmitool = pytest.mark.skipif(IPMITOOL is None, reason="ipmitool is not installed")


def ipmitool(
    spec: BmcSpec, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert IPMITOOL is not None
    return subprocess.run(
        [
            IPMITOOL,
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            str(spec.port),
            "-U",
            spec.username,
            "-P",
            spec.password if password is None else password,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_ipmitool
def test_ipmitool_power_and_chassis_status(spec: BmcSpec, hooks: MemoryHooks) -> None:
    result = ipmitool(spec, "power", "status")
    assert result.returncode == 0, result.stderr
    assert "Chassis Power is on" in result.stdout

    result = ipmitool(spec, "power", "off")
    assert result.returncode == 0, result.stderr
    assert hooks.on["compute-1"] is False
    assert "Chassis Power is off" in ipmitool(spec, "power", "status").stdout

    result = ipmitool(spec, "power", "on")
    assert result.returncode == 0, result.stderr
    assert hooks.on["compute-1"] is True

    result = ipmitool(spec, "chassis", "status")
    assert result.returncode == 0, result.stderr
    assert "System Power" in result.stdout and ": on" in result.stdout

    result = ipmitool(spec, "mc", "info")
    assert result.returncode == 0, result.stderr
    assert "IPMI Version" in result.stdout

    assert hooks.calls == [("off", "compute-1"), ("on", "compute-1")]


@needs_ipmitool
def test_ipmitool_wrong_password_is_refused(spec: BmcSpec, hooks: MemoryHooks) -> None:
    started = time.monotonic()
    result = ipmitool(spec, "power", "off", password="wrong-password")
    assert result.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr
    assert time.monotonic() - started < 5.0
    assert hooks.calls == []


def test_the_controllers_bmc_calls_do_not_queue_behind_other_blocking_work(
    farm: BmcFarm, spec: BmcSpec, tmp_path: Path
) -> None:
    """A controller busy with database writes and workflow steps (asyncio's default
    executor, a few threads on a small machine) still fences on time: its BMC clients
    have threads of their own. Through the default executor the same read, under the
    same load, misses its deadline and looks like a BMC that does not answer."""
    secrets = tmp_path / "bmc.toml"
    secrets.write_text(f'["{spec.host}"]\nusername = "{USER}"\npassword = "{PASSWORD}"\n')
    config = tmp_path / "medevac.toml"
    config.write_text(
        f'bmc_secrets_file = "{secrets}"\n[monitor]\nbmc_timeout = 1.0\n'
        f'[hosts."{spec.host}"]\nbmc_address = "127.0.0.1"\nbmc_port = {spec.port}\n'
    )
    settings = load_settings(config)

    async def read_while_the_default_executor_is_busy(client: PowerControl) -> PowerState:
        assert await client.power_state() is PowerState.ON  # logged in, session warm
        blocked = threading.Event()
        busy = [asyncio.ensure_future(asyncio.to_thread(blocked.wait, 10)) for _ in range(40)]
        await asyncio.sleep(0.05)
        try:
            return await client.power_state()
        finally:
            blocked.set()
            await asyncio.gather(*busy)

    async def scenario() -> None:
        pool = bmc_thread_pool(len(settings.hosts))
        try:
            own = build_bmc_clients(settings, pool)[spec.host]
            assert await read_while_the_default_executor_is_busy(own) is PowerState.ON
        finally:
            pool.shutdown(wait=False)
        shared = build_bmc_clients(settings)[spec.host]
        with pytest.raises(BmcUnreachable, match="no answer within 1 s"):
            await read_while_the_default_executor_is_busy(shared)

    asyncio.run(scenario())

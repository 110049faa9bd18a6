"""The demo on the embedded lab: a host fault, and what Nova shows of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from medevac.cloud import CloudDriver, Server
from medevac.lab.client import LabClient, lab_down, lab_up
from medevac.lab.layout import LabError, LabPaths

DEMO_HOSTS = 4
DEMO_SERVERS_PER_HOST = 3
SCENARIOS = ("host-crash", "power-loss")


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], within: float, interval: float = 0.2
) -> float:
    """Poll ``check`` until it holds; return how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(interval)
    raise LabError(f"timed out after {within:.0f} s waiting for {what}")


def run_demo(paths: LabPaths, scenario: str, console: Console) -> None:
    """Bring a lab up, fail a host, force it down and evacuate through the cloud driver."""
    from medevac.cli.lab import render_status

    if scenario not in SCENARIOS:
        raise LabError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    console.rule("[bold]medevac demo: bringing the lab up")
    t0 = time.monotonic()
    info = lab_up(paths, DEMO_HOSTS, DEMO_SERVERS_PER_HOST)
    console.print(f"lab ready in {time.monotonic() - t0:.1f} s")
    try:
        client = LabClient(paths)
        render_status(client.status(), console)
        victim = info["hosts"][0]
        console.rule(f"[bold]injecting {scenario} on {victim}")
        record = client.inject(scenario, victim)
        console.print(f"fault injected at {record['at']} (T00)")
        driver = CloudDriver(info["cloud"], clouds_yaml=Path(info["clouds_yaml"]))
        asyncio.run(_show_nova_view(driver, client, victim, console))
        render_status(client.status(), console)
        twice = {s: h for s, h in client.running().items() if len(h) > 1}
        if twice:
            raise LabError(f"servers running on two hosts: {twice}")
        console.print("[green]invariant holds: no server runs on two hosts")
    finally:
        console.rule("[bold]bringing the lab down")
        lab_down(paths)
        console.print("lab stopped")


async def _show_nova_view(
    driver: CloudDriver, client: LabClient, victim: str, console: Console
) -> None:
    try:

        async def service_down() -> bool:
            return (await driver.get_compute_service(victim)).state == "down"

        t = await _until(f"Nova to notice {victim} is down", service_down, 60)
        console.print(
            f"Nova's own heartbeat check saw {victim} down after {t:.1f} s "
            "(service_down_time): host_status UNKNOWN; Nova cannot tell dead from cut off"
        )
        servers = await driver.list_host_servers(victim)
        _print_servers(console, servers, "before force-down")
        await driver.set_forced_down(victim, True)
        servers = await driver.list_host_servers(victim)
        _print_servers(console, servers, "after force-down (the host is known to be off)")
        ha = [s for s in servers if s.metadata.get("HA_Enabled") == "True"]
        t1 = time.monotonic()
        await asyncio.gather(*(driver.evacuate(s.id) for s in ha))

        async def all_moved() -> bool:
            now = await asyncio.gather(*(driver.get_server(s.id) for s in ha))
            return all(s.status == "ACTIVE" and s.host not in (None, victim) for s in now)

        await _until("evacuated servers to become ACTIVE elsewhere", all_moved, 90)
        console.print(
            f"evacuated {len(ha)} HA servers in {time.monotonic() - t1:.1f} s; "
            f"{len(servers) - len(ha)} without HA_Enabled stay on {victim}"
        )
    finally:
        await driver.close()


def _print_servers(console: Console, servers: list[Server], when: str) -> None:
    console.print(f"[bold]{when}:[/]")
    for s in servers:
        console.print(
            f"  {s.name:<14} {s.status:<8} host_status={s.host_status or '-':<8} "
            f"HA_Enabled={s.metadata.get('HA_Enabled', '-')}"
        )

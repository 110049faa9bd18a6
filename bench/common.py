"""What the benchmarks share: percentiles, polling, a free port, summary rows."""

from __future__ import annotations

import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# A benchmark stopped with SIGTERM still runs its cleanup (its lab, its controller).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait(what: str, check: Callable[[], T | None], timeout: float = 30.0, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ms(values: list[float]) -> str:
    """'median / p99' of values given in seconds, in milliseconds."""
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f} / {percentile(values, 0.99) * 1000:.0f} ms"


def start_lab(paths: Any, layout: list[int]) -> dict[str, Any]:
    """A lab of ``layout`` (servers per host), given time in proportion to its size.

    Generous: each boot costs the lab's Nova more as its host fills (every claim reads
    the allocations of every server already on the host from Placement), so a 200-server
    lab of 50-server hosts has taken from 6 to more than 15 minutes."""
    from medevac.lab.client import lab_up

    t0 = time.monotonic()
    info = lab_up(
        paths, len(layout), max(layout), layout=layout, ready_within=120 + 10 * sum(layout)
    )
    print(f"lab with {sum(layout)} servers ready in {time.monotonic() - t0:.0f} s", flush=True)
    return info

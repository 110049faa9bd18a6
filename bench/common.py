"""What the benchmarks share: percentiles and tails, polling, a free port, summary rows."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# A benchmark stopped with SIGTERM still runs its cleanup (its lab, its controller).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# A p99 needs at least 100 samples; with fewer, it is only the largest one: the maximum.
TAIL_SAMPLES = 100


def tail(values: Sequence[float]) -> tuple[str, float]:
    """The far end of ``values`` under its honest name: ("p99", the 99th percentile)
    from 100 values or more, else ("max", the largest)."""
    if len(values) >= TAIL_SAMPLES:
        return "p99", percentile(values, 0.99)
    return "max", max(values)


def tail_name(*samples: Sequence[float]) -> str:
    """The name for a column, heading or legend whose tails come from ``samples``
    (one list per cell): "p99" when every list has 100 values or more, "max" when
    none has, and "p99 (max if n < 100)" when they differ."""
    names = {"p99" if len(s) >= TAIL_SAMPLES else "max" for s in samples if s}
    if names == {"p99"}:
        return "p99"
    if len(names) > 1:
        return f"p99 (max if n < {TAIL_SAMPLES})"
    return "max"


def wait(what: str, check: Callable[[], T | None], timeout: float = 30.0, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def print_log_tails(logs: Iterable[tuple[str, Path]], chars: int = 3000) -> None:
    """The end of each (name, log file) that exists: why a run broke."""
    for name, log in logs:
        if log.exists():
            print(f"--- {name}\n{log.read_text(errors='replace')[-chars:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ms(values: Sequence[float]) -> str:
    """'median / tail' of values given in seconds, in milliseconds; the tail is the p99
    from 100 values or more, else the max (``tail``; ``tail_name`` names it)."""
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f} / {tail(values)[1] * 1000:.0f} ms"


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_quiet(
    what: str, busy_below: float = 0.3, window: float = 3.0, at_most: float = 180.0
) -> float:
    """Wait until the machine's CPU is less than ``busy_below`` busy over ``window`` s
    (a lab just booted keeps Nova busy for minutes), at most ``at_most`` s; prints and
    returns the last window's busy share, so that every run starts on a quiet lab."""
    start = time.monotonic()
    while True:
        busy0, total0 = cpu_ticks()
        time.sleep(window)
        busy1, total1 = cpu_ticks()
        busy = (busy1 - busy0) / max(1, total1 - total0)
        waited = time.monotonic() - start
        if busy < busy_below or waited > at_most:
            print(
                f"{what}: CPU {busy:.0%} busy after {waited:.0f} s of waiting",
                flush=True,
            )
            return busy


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


def _process_name(pid: str) -> str | None:
    """A short name for a process of the lab or the controller, or None for the rest."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    joined = " ".join(argv)
    for key, name in (
        ("nova_service", "nova"),
        ("neutron_service", "neutron"),
        ("medevac serve", "controller"),
        ("medevac.lab.consumer", "consumer"),
        ("medevac.lab.supervisor", "lab supervisor"),
        ("rabbit", "rabbitmq"),
        ("beam.smp", "rabbitmq"),
    ):
        if key in joined:
            return name
    return None


def cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far (user + system) by the lab's and medevac's processes,
    summed by name; the difference of two readings says who was busy in between."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        name = _process_name(pid)
        if name is None:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_since(before: dict[str, float], seconds: float) -> str:
    """Each process group's share of one core since ``before``, busiest first."""
    now = cpu_by_process()
    used = {k: now.get(k, 0.0) - before.get(k, 0.0) for k in now}
    busiest = sorted(used.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / max(seconds, 1e-9):.0%}" for k, v in busiest if v > 0.05)


def counted_since(before: dict[str, int], now: dict[str, int]) -> str:
    """What a counter (cloud calls, notifications heard) counted between two readings."""
    made = {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
    return ", ".join(f"{k} x{v}" for k, v in sorted(made.items(), key=lambda kv: -kv[1]))

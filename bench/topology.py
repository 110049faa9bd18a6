"""Memory and lookup cost of the inspector's topology cache at cloud scale.

Builds the cache for N servers (one port each) spread over hosts, as a full resync
would, and reports the memory it holds (tracemalloc, and the process's RSS growth),
the time of the build and of a host lookup on the fault path.

Then what a resync costs the rest of the controller, which shares its event loop (the
monitor's heartbeats, the API): a task waking every millisecond, as a heartbeat
would, records how long the loop kept it waiting while the cache was rebuilt in one
go (``Topology.replace``) and in slices (``Topology.rebuild``, what the resync runs),
alternating, over the same listing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from common import tail, tail_name
from docs_section import write_section

from medevac.cloud.models import DataPlaneStatus
from medevac.inspector.topology import PortInfo, ServerInfo, Topology


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def build(servers: int, per_host: int) -> tuple[list[ServerInfo], list[PortInfo]]:
    infos, ports = [], []
    for i in range(servers):
        sid = str(uuid.uuid4())
        host = f"compute-{i // per_host:05d}"
        project = f"project-{i % 1000:04d}"
        infos.append(
            ServerInfo(sid, f"vm-{i}", project, host, "active", None, {"HA_Enabled": "True"})
        )
        ports.append(
            PortInfo(
                str(uuid.uuid4()),
                project,
                sid,
                host,
                f"net-{i % 50}",
                f"physnet{i % 2 + 1}",
                DataPlaneStatus.ACTIVE,
            )
        )
    return infos, ports


def fresh(
    servers: list[ServerInfo], ports: list[PortInfo]
) -> tuple[Iterator[ServerInfo], Iterator[PortInfo]]:
    """New objects, as a resync makes them from the cloud's listing."""
    return (replace(s) for s in servers), (replace(p) for p in ports)


async def stalls(
    topo: Topology,
    servers: list[ServerInfo],
    ports: list[PortInfo],
    sliced: bool,
    collector: Collector,
) -> tuple[float, list[float]]:
    """One resync with a 1 ms ticker beside it: (its wall time, the ticker's waits)."""
    waits: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            waits.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    fresh_servers, fresh_ports = fresh(servers, ports)
    gc.callbacks.append(collector.watch)
    t0 = time.perf_counter()
    if sliced:
        await topo.rebuild(fresh_servers, fresh_ports, at=time.time())
    else:
        topo.replace(fresh_servers, fresh_ports, at=time.time())
    took = time.perf_counter() - t0
    gc.callbacks.remove(collector.watch)
    done.set()
    await tick
    return took, waits


class Collector:
    """The garbage collector's full passes (generation 2) and how long each took."""

    def __init__(self) -> None:
        self.started = 0.0
        self.passes: list[float] = []

    def watch(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.passes.append(time.perf_counter() - self.started)


def stall_rows(
    topo: Topology, servers: list[ServerInfo], ports: list[PortInfo], runs: int
) -> tuple[str, list[str]]:
    """Resyncs of a full cache, in one go and in slices, alternating: the name of the
    ticker's tail wait (``tail_name``: a resync in one go may leave few waits) and the
    table's rows."""
    results: dict[bool, list[tuple[float, list[float]]]] = {False: [], True: []}
    full_passes: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for sliced in (False, True):
            gc.collect()
            collector = Collector()
            results[sliced].append(asyncio.run(stalls(topo, servers, ports, sliced, collector)))
            full_passes[sliced] += collector.passes
    rows = []
    all_waits = []
    for sliced, label in ((False, "in one go (`replace`)"), (True, "in slices (`rebuild`)")):
        took = [t for t, _ in results[sliced]]
        worst = [max(w) for _, w in results[sliced]]
        waits = sorted(x for _, w in results[sliced] for x in w)
        all_waits.append(waits)
        gcs = full_passes[sliced]
        rows.append(
            f"| {label} | {statistics.median(took):.2f} s | {ms(statistics.median(worst))} "
            f"| {ms(max(worst))} | {ms(tail(waits)[1])} "
            f"| {len(gcs) / runs:.1f}, longest {ms(max(gcs, default=0.0))} |"
        )
    return tail_name(*all_waits), rows


def ms(seconds: float) -> str:
    """One duration in milliseconds (``common.ms`` gives median / tail of a list)."""
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--servers", type=int, default=500_000)
    p.add_argument("--per-host", type=int, default=50)
    p.add_argument("--runs", type=int, default=3, help="resyncs per way, alternating")
    p.add_argument("--write-docs", type=Path)
    args = p.parse_args()
    gc.collect()
    rss0 = rss_mb()
    tracemalloc.start()
    servers, ports = build(args.servers, args.per_host)
    listing, _ = tracemalloc.get_traced_memory()
    topo = Topology()
    t0 = time.perf_counter()
    topo.replace(*fresh(servers, ports), at=time.time())
    build_s = time.perf_counter() - t0
    gc.collect()
    with_cache, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    asyncio.run(topo.rebuild(*fresh(servers, ports), at=time.time()))
    _, rebuild_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The listing held, as in a resync.
    wait_tail, stall = stall_rows(topo, servers, ports, args.runs)
    del servers, ports
    gc.collect()
    rss = rss_mb() - rss0
    # Between resyncs: what a full pass of the collector costs with the cache held.
    passes = []
    for _ in range(5):
        t = time.perf_counter()
        gc.collect()
        passes.append(time.perf_counter() - t)
    hosts = [f"compute-{h:05d}" for h in range(0, args.servers // args.per_host, 97)]
    lookups = []
    for host in hosts:
        t = time.perf_counter()
        topo.servers_on(host)
        topo.ports_on(host)
        lookups.append(time.perf_counter() - t)
    body = "\n".join(
        [
            "| servers (one port each) | hosts | the cache (tracemalloc) | RSS growth "
            "| full replace | one host's servers and ports | a full collection, cache held "
            "| objects the collector tracks |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {args.servers:,} | {args.servers // args.per_host:,} "
            f"| {(with_cache - listing) / 2**20:.0f} MB | {rss:.0f} MB | {build_s:.2f} s "
            f"| {statistics.median(lookups) * 1e6:.0f} µs | {ms(statistics.median(passes))} "
            f"| {len(gc.get_objects()):,} |",
            "",
            f"A resync holds the listing ({listing / 2**20:.0f} MB here), the old cache and "
            f"the new one: {rebuild_peak / 2**20:.0f} MB at its peak.",
            "",
            f"The event loop during a resync ({args.runs} resyncs each way, alternating; "
            "a 1 ms ticker beside it; the listing held, as in a resync):",
            "",
            "| the cache rebuilt | resync | longest wait (median of resyncs) | longest wait "
            f"(worst) | ticker's {wait_tail} wait | full collections per resync |",
            "|---|---:|---:|---:|---:|---:|",
            *stall,
        ]
    )
    print(body)
    if args.write_docs:
        write_section(
            args.write_docs,
            "topology",
            body,
            "`bench/topology.py`: the inspector's cache as a full resync fills it; the lookup "
            f"is the median over {len(lookups)} hosts of {args.per_host} servers.",
        )


if __name__ == "__main__":
    main()

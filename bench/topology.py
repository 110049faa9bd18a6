"""Memory and lookup cost of the inspector's topology cache at cloud scale.

Builds the cache for N servers (one port each) spread over hosts, as a full resync
would, and reports the memory it holds (tracemalloc, and the process's RSS growth),
the time of the build and of a host lookup on the fault path.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time
import tracemalloc
import uuid
from pathlib import Path

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--servers", type=int, default=500_000)
    p.add_argument("--per-host", type=int, default=50)
    p.add_argument("--write-docs", type=Path)
    args = p.parse_args()
    gc.collect()
    rss0 = rss_mb()
    tracemalloc.start()
    servers, ports = build(args.servers, args.per_host)
    topo = Topology()
    t0 = time.perf_counter()
    topo.replace(servers, ports, at=time.time())
    build_s = time.perf_counter() - t0
    del servers, ports
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = rss_mb() - rss0
    hosts = [f"compute-{h:05d}" for h in range(0, args.servers // args.per_host, 97)]
    lookups = []
    for host in hosts:
        t = time.perf_counter()
        topo.servers_on(host)
        topo.ports_on(host)
        lookups.append(time.perf_counter() - t)
    body = "\n".join(
        [
            "| servers (one port each) | hosts | memory held (tracemalloc) | RSS growth "
            "| full replace | one host's servers and ports |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {args.servers:,} | {args.servers // args.per_host:,} | {held / 2**20:.0f} MB "
            f"| {rss:.0f} MB | {build_s:.2f} s | {statistics.median(lookups) * 1e6:.0f} µs |",
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

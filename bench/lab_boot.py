"""How fast the lab comes up, per size: time to ready and per-server boot cost.

Each size is started and stopped through the real CLI path (`lab_up`/`lab_down`),
`--runs` times; the supervisor log gives the split between service start and boots.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from docs_section import write_chart, write_section

from medevac.lab.client import lab_down, lab_up
from medevac.lab.layout import LabPaths

SIZES = [(3, 2), (10, 5)]


class Run(TypedDict):
    ready_s: float
    services_s: float
    per_server_s: float


class Spread(TypedDict):
    median: float
    min: float
    max: float


class SizeResult(TypedDict):
    hosts: int
    servers_per_host: int
    runs: int
    ready_s: Spread
    services_s: Spread
    per_server_s: Spread


def spread(values: list[float]) -> Spread:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def one_run(hosts: int, per_host: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        t0 = time.monotonic()
        lab_up(paths, hosts, per_host)
        ready = time.monotonic() - t0
        log = paths.log.read_text()
        lab_down(paths)
    found = re.search(r"nova and neutron ready in ([\d.]+) s", log)
    if found is None:
        raise RuntimeError("the lab's log says nothing of nova and neutron ready")
    services = float(found.group(1))
    servers = hosts * per_host
    return {
        "ready_s": ready,
        "services_s": services,
        "per_server_s": (ready - services) / servers if servers else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sizes", default=",".join(f"{h}x{s}" for h, s in SIZES))
    p.add_argument("--json", type=Path)
    p.add_argument("--write-docs", type=Path, help="update this file's lab start-up section")
    args = p.parse_args()
    results: list[SizeResult] = []
    for size in args.sizes.split(","):
        hosts, per_host = (int(x) for x in size.split("x"))
        runs = [one_run(hosts, per_host) for _ in range(args.runs)]
        row: SizeResult = {
            "hosts": hosts,
            "servers_per_host": per_host,
            "runs": len(runs),
            "ready_s": spread([r["ready_s"] for r in runs]),
            "services_s": spread([r["services_s"] for r in runs]),
            "per_server_s": spread([r["per_server_s"] for r in runs]),
        }
        results.append(row)
        print(
            f"{hosts} hosts x {per_host} servers: ready median {row['ready_s']['median']:.1f} s "
            f"(min {row['ready_s']['min']:.1f}, max {row['ready_s']['max']:.1f}), "
            f"services {row['services_s']['median']:.1f} s, "
            f"per server {row['per_server_s']['median']:.2f} s, n={len(runs)}",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": platform.platform(), "results": results}, indent=2)
        )
    if args.write_docs:
        write_docs(args.write_docs, results)


def write_docs(path: Path, results: list[SizeResult]) -> None:
    """Replace this benchmark's section of the benchmarks page with fresh figures."""
    rows = [
        "| lab | runs | ready, median (min to max) | services | per server |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        ready = r["ready_s"]
        rows.append(
            f"| {r['hosts']} hosts x {r['servers_per_host']} servers | {r['runs']} | "
            f"{ready['median']:.1f} s ({ready['min']:.1f} to {ready['max']:.1f}) | "
            f"{r['services_s']['median']:.1f} s | {r['per_server_s']['median']:.2f} s |"
        )
    chart = write_chart(
        path,
        "lab_boot",
        "lab ready (s), median",
        [f"{r['hosts']} x {r['servers_per_host']}" for r in results],
        {"ready": [r["ready_s"]["median"] for r in results]},
        "s",
    )
    write_section(path, "lab_boot", "\n".join(rows) + "\n\n" + chart)


if __name__ == "__main__":
    main()

"""Planned maintenance on the lab: from `maintenance start` to the host reported empty,
beside the same live migrations issued by a bare openstacksdk client, in the same run.

One lab holds, for each run, a host of ``--servers`` servers that medevac empties and
one that the bare client empties, plus two empty hosts. Every server moves (the host
group migrates servers without HA too), ``--concurrency`` at a time for both. medevac:
``POST /v1/hosts/{host}/maintenance`` (no deadline: no answer window) to the state
EMPTY, which follows Nova's listing of the host with no server left. The bare client:
the compute service disabled, the host's servers listed, each live-migrated through
openstacksdk's ``live_migrate_server`` and read until ACTIVE on another host with no
task (every ``--poll`` s), then the host listed empty. Each run alternates which goes
first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openstack
import openstack.config
from common import start_lab, wait, wait_quiet
from docs_section import write_section

from medevac.lab.client import LabClient, lab_down
from medevac.lab.layout import LabPaths
from medevac.lab.stack import Stack


def bare(cloud: str, clouds_yaml: str, host: str, concurrency: int, poll: float) -> dict[str, Any]:
    """Empty ``host`` with a bare openstacksdk client; returns the total and each
    server's time from its request to its arrival."""
    region = openstack.config.OpenStackConfig(config_files=[clouds_yaml]).get_one(cloud=cloud)
    conn = openstack.connection.Connection(config=region)
    compute = conn.compute
    t0 = time.monotonic()
    service = next(s for s in compute.services(binary="nova-compute", host=host))
    compute.disable_service(service, host, "nova-compute", disabled_reason="bare maintenance")
    servers = list(compute.servers(all_projects=True, compute_host=host))

    async def run() -> list[float]:
        gate = asyncio.Semaphore(concurrency)

        async def one(server_id: str) -> float:
            async with gate:
                start = time.monotonic()
                await asyncio.to_thread(
                    compute.live_migrate_server, server_id, host=None, block_migration="auto"
                )
                while True:
                    s = await asyncio.to_thread(compute.get_server, server_id)
                    if s.status == "ACTIVE" and s.compute_host != host and s.task_state is None:
                        return time.monotonic() - start
                    if s.status == "ERROR":
                        raise RuntimeError(f"{server_id} ended in ERROR")
                    await asyncio.sleep(poll)

        return list(await asyncio.gather(*(one(s.id) for s in servers)))

    each = asyncio.run(run())
    left = list(compute.servers(all_projects=True, compute_host=host))
    total = time.monotonic() - t0
    conn.close()
    if left:
        raise RuntimeError(f"the bare client left {len(left)} servers on {host}")
    return {"total": total, "each": each}


def medevac(stack: Stack, host: str) -> dict[str, Any]:
    """Empty ``host`` through medevac's maintenance; the total and each server's time
    from its migration's start to its verified arrival."""
    t0 = time.monotonic()
    r = stack.http.post(
        f"{stack.url}/v1/hosts/{host}/maintenance",
        json={"reason": "bench", "deadline": None},
        headers=stack.admin,
    )
    r.raise_for_status()

    def over() -> dict[str, Any] | None:
        m = stack.get(f"/v1/hosts/{host}/maintenance")
        return m if m["state"] in ("EMPTY", "READY", "PARTIAL", "INTERRUPTED") else None

    m = wait(f"{host} emptied by medevac", over, 600, 0.05)
    total = time.monotonic() - t0
    if m["state"] != "EMPTY":
        raise RuntimeError(f"{host}'s maintenance ended {m['state']}: {m['detail']}")
    each = [s["ended_at"] - s["started_at"] for s in m["servers"]]
    return {"total": total, "each": each}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--servers", type=int, default=10, help="servers on each host emptied")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4, help="live migrations at once")
    p.add_argument("--poll", type=float, default=0.5, help="the bare client's read interval")
    p.add_argument("--write-docs", type=Path)
    args = p.parse_args()
    n = args.servers
    layout = [n, n] * args.runs + [0, 0]
    groups = [
        {
            "name": "bench",
            "hosts": ["*"],
            "maintenance_migrate_all": True,
            "concurrency": args.concurrency,
        }
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        info = start_lab(paths, layout)
        lab = LabClient(paths)
        try:
            with Stack(
                info,
                log=Path(d) / "controller.log",
                MEDEVAC_RECOVERY__GROUPS=json.dumps(groups),
            ) as stack:
                stack.start(sum(layout), within=120)
                try:
                    for k in range(args.runs):
                        ours, theirs = f"host{2 * k + 1}", f"host{2 * k + 2}"
                        wait_quiet(f"before run {k + 1}")
                        order = ["medevac", "bare"] if k % 2 == 0 else ["bare", "medevac"]
                        row: dict[str, Any] = {"run": k + 1, "first": order[0]}
                        for who in order:
                            if who == "medevac":
                                row["medevac"] = medevac(stack, ours)
                            else:
                                row["bare"] = bare(
                                    info["cloud"],
                                    str(info["clouds_yaml"]),
                                    theirs,
                                    args.concurrency,
                                    args.poll,
                                )
                        rows.append(row)
                        print(line(row), flush=True)
                except Exception:
                    print((Path(d) / "controller.log").read_text()[-4000:])
                    raise
        finally:
            lab.close()
            lab_down(paths)
    report(rows, n, args.concurrency, args.poll, args.write_docs)


def line(row: dict[str, Any]) -> str:
    m, b = row["medevac"], row["bare"]
    return (
        f"| {row['run']} | {row['first']} | {m['total']:.2f} s | "
        f"{statistics.median(m['each']):.2f} / {max(m['each']):.2f} s | {b['total']:.2f} s | "
        f"{statistics.median(b['each']):.2f} / {max(b['each']):.2f} s |"
    )


def report(
    rows: list[dict[str, Any]], n: int, concurrency: int, poll: float, docs: Path | None
) -> None:
    lines = [
        "| run | first | medevac: start to host empty | medevac: each server, median / max "
        "| bare client: disable to host empty | bare client: each server, median / max |",
        "|---|---|---|---|---|---|",
        *(line(r) for r in rows),
    ]
    ours = [r["medevac"]["total"] for r in rows]
    theirs = [r["bare"]["total"] for r in rows]
    lines += [
        "",
        f"{n} servers on each host, live-migrated {concurrency} at a time by both; "
        f"{len(rows)} runs: medevac median {statistics.median(ours):.2f} s (max "
        f"{max(ours):.2f} s), the bare client median {statistics.median(theirs):.2f} s "
        f"(max {max(theirs):.2f} s; its reads every {poll:g} s). medevac's time includes "
        "recording the maintenance, disabling the service, the owners' events, each "
        "migration's records and the host's last listing; each server's time runs from "
        "its migration's start (medevac: its record; bare: its request) to its arrival "
        "read.",
    ]
    body = "\n".join(lines)
    print(body)
    if docs:
        write_section(docs, "maintenance", body)


if __name__ == "__main__":
    main()

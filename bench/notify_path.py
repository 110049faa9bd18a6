"""The notifier alone: event emitted to webhook received, no cloud in the way.

A real outbox (SQLite file, WAL), real HTTP over loopback, and a consumer in its own
process (medevac.lab.consumer). For each size, N ``compute.instance.update`` events
(one per server of a failed host) fire N Doctor-style alarms among 10,000 alarms on
other servers; the consumer's receive times give the first and last alarm latency.

Two ways to hand the batch over, interleaved run by run: the whole batch evaluated,
then written and sent ("whole batch"), and the fault path's way, the first alarms'
webhooks queued as soon as they are found and the rest evaluated once they were tried
("first alarms first"). ``--load N`` keeps N other processes spinning meanwhile, as
the lab's Nova and Neutron do on this two-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from common import free_port, tail, tail_name
from docs_section import write_chart, write_section

from medevac.lab.consumer import doctor_alarm
from medevac.notifier.alarms import AlarmSpec
from medevac.notifier.delivery import Outbox
from medevac.notifier.events import INSTANCE_UPDATE, Event
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.records import AlarmStore, OutboxStore


def alarm(server_id: str, url: str) -> AlarmSpec:
    return AlarmSpec.model_validate(doctor_alarm(server_id, server_id, url))


MODES = {"whole batch": False, "first alarms first": True}


async def run(
    base: str, sizes: list[int], runs: int, background: int, cold: bool = False
) -> dict[tuple[str, int], dict[str, list[float]]]:
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    async with httpx.AsyncClient(base_url=base) as ctl:
        for _ in range(100):
            try:
                await ctl.get("/_consumer/received")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        with tempfile.TemporaryDirectory() as d:
            db = Database(f"sqlite:///{Path(d) / 'bench.db'}")
            db.migrate()
            checkpoints = asyncio.create_task(db.run_checkpoints())  # as `medevac serve`
            store = AlarmStore(db)
            notifier = Notifier(store, OutboxStore(db))
            outbox = notifier.outbox
            await outbox.start()
            for _ in range(background):
                await notifier.create(alarm(str(uuid.uuid4()), base + "/other"), "p")
            biggest = max(sizes)
            servers = [str(uuid.uuid4()) for _ in range(biggest)]
            mine = [await notifier.create(alarm(s, base + "/failure"), "p") for s in servers]
            gc.freeze()  # as `medevac serve` does once its long-lived state is loaded
            for size in sizes:
                for _ in range(runs):
                    for mode, first_alarms_first in MODES.items():
                        first, last = await one_run(
                            ctl, notifier, outbox, mine, servers[:size], first_alarms_first, cold
                        )
                        got = results.setdefault((mode, size), {"first": [], "last": []})
                        got["first"].append(first)
                        got["last"].append(last)
                for mode in MODES:
                    lasts = results[(mode, size)]["last"]
                    print(size, mode, "last per run (ms):", " ".join(f"{x:.0f}" for x in lasts))
            await outbox.close()
            checkpoints.cancel()
            db.dispose()
    return results


async def one_run(
    ctl: httpx.AsyncClient,
    notifier: Notifier,
    outbox: Outbox,
    mine: list[Any],
    servers: list[str],
    first_alarms_first: bool,
    cold: bool,
) -> tuple[float, float]:
    """One burst: (first, last) webhook received, ms after the emit."""
    await ctl.post("/_consumer/reset")
    for a in mine:
        a.state = "ok"
    if cold:
        # As between two faults on the lab: the consumer's keep-alive timeout closed
        # every connection; the monitor's suspicion opens the first ones, a
        # confirmation (about 40 ms) before the verdict.
        await outbox.http.close()
        notifier.prepare([("instance_id", s) for s in servers])
        await asyncio.sleep(0.04)
    now = time.time()
    events = [
        Event(INSTANCE_UPDATE, now, {"instance_id": s, "project_id": "p", "state": "error"})
        for s in servers
    ]
    target = outbox.counters["delivered"] + len(servers)
    t0 = time.time()
    notifier.emit(events, first_alarms_first=first_alarms_first)
    # Wait on the outbox's own count: polling the consumer from this process would
    # take CPU from the path being measured.
    deadline = time.monotonic() + 10
    while outbox.counters["delivered"] < target:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    got: list[dict[str, Any]] = (await ctl.get("/_consumer/received")).json()["received"]
    if len(got) < len(servers):
        raise RuntimeError(f"only {len(got)} of {len(servers)} webhooks arrived")
    times = sorted(g["at"] for g in got)
    await asyncio.sleep(0.1)
    return (times[0] - t0) * 1000, (times[-1] - t0) * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--sizes", default="1,10,50,100")
    p.add_argument("--background", type=int, default=10_000)
    p.add_argument("--load", type=int, default=0, help="other processes spinning meanwhile")
    p.add_argument(
        "--cold",
        action="store_true",
        help="each burst starts with no kept-alive connection but those opened 40 ms "
        "before (the monitor's suspicion), as on the lab",
    )
    p.add_argument("--write-docs", type=Path)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    port = free_port()
    consumer = subprocess.Popen([sys.executable, "-m", "medevac.lab.consumer", "--port", str(port)])
    spin = "while True: pass"
    load = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.load)]
    try:
        results = asyncio.run(
            run(f"http://127.0.0.1:{port}", sizes, args.runs, args.background, args.cold)
        )
    finally:
        for proc in [consumer, *load]:
            proc.terminate()
            proc.wait(10)
    # The tail: a p99 from 100 runs a row, else the max (of 20 runs by default).
    far = tail_name(*(r[key] for r in results.values() for key in ("first", "last")))
    rows = [
        f"| servers | handed over | first alarm median | first {far} | last alarm median "
        f"| last {far} | runs |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for (mode, size), r in results.items():
        rows.append(
            f"| {size} | {mode} | {statistics.median(r['first']):.1f} ms | "
            f"{tail(r['first'])[1]:.1f} ms | {statistics.median(r['last']):.1f} ms | "
            f"{tail(r['last'])[1]:.1f} ms | {len(r['first'])} |"
        )
    table = "\n".join(rows)
    print(table)
    if args.write_docs:
        med = statistics.median
        chart = write_chart(
            args.write_docs,
            "notify_path",
            "the notifier alone: event to webhook received (ms)",
            [f"{size} alarms, {mode}" for mode, size in results],
            {
                "first alarm": [med(r["first"]) for r in results.values()],
                "last alarm": [med(r["last"]) for r in results.values()],
            },
            "ms",
            whiskers=(
                far,
                {
                    "first alarm": [tail(r["first"])[1] for r in results.values()],
                    "last alarm": [tail(r["last"])[1] for r in results.values()],
                },
            ),
        )
        write_section(
            args.write_docs,
            "notify_path",
            table + "\n\n" + chart,
            f"`bench/notify_path.py`: event emitted to webhook received, {args.background:,} "
            "other alarms loaded, outbox on SQLite, consumer in its own process"
            + (f", {args.load} other processes spinning" if args.load else "")
            + (", connections cold (warmed 40 ms before)" if args.cold else "")
            + "; the two ways of handing a batch over interleaved, run by run.",
        )


if __name__ == "__main__":
    main()

"""Host recovery on the lab: fault to every server ACTIVE on another host, per level.

One lab holds, for each (level, size) measured, a host of that many servers in its
own host group (that level, ``evacuate_all``, the same evacuation concurrency), plus
for each size a host the *floor* is measured on, and two empty hosts. A real
`medevac serve` recovers each host after a `host-crash`; the profile of its incident
gives the stages (detection V-T00, fencing R1-T02, evacuations R3-R2, total R3-T00).

The floor: the same evacuations by a bare client (medevac's cloud driver, no
workflow, no database) with the same concurrency on a crashed host forced down by
hand, from the first evacuate call to the last server ACTIVE elsewhere. It is measured
first, on the lab as medevac will find it, before the controller starts (the floor host
then boots again, empty), or with ``--floor-at last`` after the controller stops, on a
lab with one host fewer per run. Each run prints which processes were busy during it.

Target (level 2): verdict to all servers recovered within the fencing time plus 1.2x
the floor of the same size. Masakari, for scale, waits 180 s after disabling the
service before its first evacuation.
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

from common import counted_since, cpu_by_process, cpu_since, percentile, start_lab, wait, wait_quiet
from docs_section import write_chart, write_section

from medevac.cloud import CloudDriver
from medevac.lab.client import LabClient, lab_down
from medevac.lab.layout import LabPaths
from medevac.lab.stack import Stack
from medevac.recovery.runtime import RecoverySettings

MASAKARI_WAIT = 180.0
# The floor reads arrivals as often as medevac does when Nova's notifications are not
# heard (with them, medevac reads when Nova says a server's task ended).
POLL = RecoverySettings().poll_interval


async def floor(driver: CloudDriver, host: str, concurrency: int) -> tuple[float, list[float]]:
    """Evacuate every server of ``host`` with ``concurrency`` at once, bare; returns the
    total and each server's time from its evacuate call to its arrival."""
    await driver.set_forced_down(host, True)
    servers = await driver.list_host_servers(host)
    gate = asyncio.Semaphore(concurrency)
    each: list[float] = []

    async def one(server_id: str) -> None:
        async with gate:
            t0 = time.monotonic()
            await driver.evacuate(server_id)
            await arrived(server_id)
            each.append(time.monotonic() - t0)
            spans.append((t0 - start, time.monotonic() - start))

    async def arrived(server_id: str) -> None:
        while True:
            s = await driver.get_server(server_id)
            if s.status == "ACTIVE" and s.host not in (None, host) and s.task_state is None:
                return
            if s.status == "ERROR" and s.task_state is None:
                raise RuntimeError(f"{server_id} ended in ERROR")
            await asyncio.sleep(POLL)

    spans: list[tuple[float, float]] = []
    start = time.monotonic()
    await asyncio.gather(*(one(s.id) for s in servers))
    print(
        "floor: each server's start and end, s after the first: "
        + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in sorted(spans)),
        flush=True,
    )
    return time.monotonic() - start, each


def measure_floor(
    loop: asyncio.AbstractEventLoop,
    lab: LabClient,
    driver: CloudDriver,
    host: str,
    n: int,
    concurrency: int,
    *,
    boot_again: bool,
) -> float:
    """The floor on ``host`` (crashed here); ``boot_again``: heal it afterwards and lift
    its force-down, so that the controller later finds an empty, healthy host."""
    wait_quiet(f"before the floor for {n} servers")
    cpu0, t0, calls0 = cpu_by_process(), time.monotonic(), dict(driver.calls)
    lab.inject("host-crash", host)
    total, each = loop.run_until_complete(floor(driver, host, concurrency))
    print(f"floor's cloud calls: {counted_since(calls0, driver.calls)}", flush=True)
    print(
        f"floor for {n} servers: {total:.1f} s; each server, evacuate call to arrival: "
        f"median {statistics.median(each):.2f} s, p90 {percentile(each, 0.9):.2f} s; "
        f"busy: {cpu_since(cpu0, time.monotonic() - t0)}",
        flush=True,
    )
    if boot_again:
        lab.heal("host-crash", host)
        loop.run_until_complete(driver.set_forced_down(host, False))
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--levels", default="1,2,3")
    p.add_argument("--sizes", default="10,50", help="servers on the failed host")
    p.add_argument("--level2-sizes", default=None, help="sizes for level 2 (default --sizes)")
    p.add_argument("--concurrency", type=int, default=8, help="evacuations at once")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs of each case and of each floor (medians)"
    )
    p.add_argument("--write-docs", type=Path)
    p.add_argument("--section", default="recovery", help="the docs section (and chart) name")
    p.add_argument(
        "--floor-at",
        choices=("first", "last"),
        default="first",
        help="measure the floor before the controller starts, or after it stops",
    )
    args = p.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    cases: list[tuple[int, int]] = []
    for level in (int(x) for x in args.levels.split(",")):
        only = args.level2_sizes if level == 2 and args.level2_sizes else None
        cases += [(level, n) for n in ([int(x) for x in only.split(",")] if only else sizes)]
    # Repeats interleave (level 1, 2, 3, then again): the lab's drift falls on each alike.
    runs = [(level, n, k) for k in range(args.repeat) for level, n in cases]
    floor_runs = [(n, k) for n in sorted({n for _, n in cases}) for k in range(args.repeat)]
    layout = [n for _, n, _ in runs] + [n for n, _ in floor_runs] + [0, 0]
    hosts = {run: f"host{i + 1}" for i, run in enumerate(runs)}
    floors = {run: f"host{len(runs) + i + 1}" for i, run in enumerate(floor_runs)}
    groups = [
        {
            "name": f"level{level}-{n}-{k}",
            "hosts": [hosts[(level, n, k)]],
            "level": level,
            "evacuate_all": True,
            "concurrency": args.concurrency,
        }
        for level, n, k in runs
    ] + [{"name": "rest", "hosts": ["*"], "concurrency": args.concurrency}]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        info = start_lab(paths, layout)
        lab = LabClient(paths)
        loop = asyncio.new_event_loop()
        driver = CloudDriver(info["cloud"], clouds_yaml=Path(info["clouds_yaml"]))
        floor_s: dict[int, list[float]] = {}

        def measure_floors() -> None:
            first = args.floor_at == "first"  # then each floor host comes back for the runs
            for n, k in floor_runs:
                floor_s.setdefault(n, []).append(
                    measure_floor(
                        loop, lab, driver, floors[(n, k)], n, args.concurrency, boot_again=first
                    )
                )

        try:
            if args.floor_at == "first":
                measure_floors()
            # Each run fails one more host for good: hosts lost more than 2 s ago must
            # not add up to the mass-failure guard's share of the zone.
            with Stack(
                info,
                log=Path(d) / "controller.log",
                MEDEVAC_RECOVERY__GROUPS=json.dumps(groups),
                MEDEVAC_INSPECTOR__GUARD_WINDOW="2",
            ) as stack:
                stack.start(sum(layout), within=120)
                try:
                    for level, n, k in runs:
                        wait_quiet(f"before level {level}, {n} servers")
                        rows.append(one_recovery(stack, lab, hosts[(level, n, k)], level, n))
                        print(rows[-1], flush=True)
                except Exception:
                    print((Path(d) / "controller.log").read_text()[-4000:])  # why, for the record
                    raise
            if args.floor_at == "last":  # the bare client alone acts on the floor hosts
                measure_floors()
        finally:
            loop.run_until_complete(driver.close())
            lab.close()
            lab_down(paths)
    report(rows, floor_s, args.concurrency, args.write_docs, args.section)


def one_recovery(stack: Stack, lab: LabClient, host: str, level: int, n: int) -> dict[str, Any]:
    cpu0, t0 = cpu_by_process(), time.monotonic()
    calls0 = stack.get("/v1/inspector")["cloud_calls"]
    heard0 = stack.get("/v1/hosts")["counters"]["nova_notifications"]
    # Servers evacuated by an earlier run (the floor's, say) may have landed here.
    on_host = sum(1 for s in lab.status()["servers"] if s["host"] == host)
    if on_host != n:
        print(f"{host} holds {on_host} servers at its fault, not {n}", flush=True)
    t00 = float(lab.inject("host-crash", host)["time"])

    def ended() -> dict[str, Any] | None:
        found = stack.get(f"/v1/incidents?host={host}&limit=1")["incidents"]
        rid = found[0].get("recovery_id") if found else None
        rec = stack.find(f"/v1/recoveries/{rid}") if rid else None
        if rec and rec["state"] in ("COMPLETED", "PARTIAL", "FENCING_FAILED"):
            return {"incident": found[0]["id"], "recovery": rec}
        return None

    # Generous: a big lab's Nova rebuilds slowly, and a stuck recovery must still end.
    done = wait(f"the recovery of {host}", ended, 120 + 10 * n, 0.25)
    rec = done["recovery"]
    if rec["state"] != "COMPLETED":
        raise RuntimeError(f"recovery of {host} ended {rec['state']}: {rec['detail']}")
    calls = counted_since(calls0, stack.get("/v1/inspector")["cloud_calls"])
    print(f"level {level}, {n} servers: the controller's cloud calls: {calls}", flush=True)
    heard = counted_since(heard0, stack.get("/v1/hosts")["counters"]["nova_notifications"])
    print(f"level {level}, {n} servers: Nova's notifications heard: {heard}", flush=True)
    lag = stack.get("/v1/hosts")["counters"]["nova_notification_lag_ms"]
    print(f"level {level}, {n} servers: Nova's notifications, sent to heard: {lag} ms", flush=True)
    prof = stack.get(f"/v1/incidents/{done['incident']}/profile?fault_at={t00}")
    at = {c["name"]: c["at"] for c in prof["checkpoints"]}
    moved = [e for e in rec["evacuations"] if e["result"] in ("recovered", "already-moved")]
    if len(moved) != on_host:
        raise RuntimeError(f"{len(moved)} of {on_host} servers of {host} recovered")
    # Each server's slot, from its "running" record to its outcome (arrival, then its
    # ports ACTIVE again): beside the floor's evacuate-to-arrival, what each one costs.
    each = [e["ended_at"] - e["started_at"] for e in moved]
    first = min(e["started_at"] for e in moved)

    def seen(e: dict[str, Any]) -> str:  # reads of its arrival; w: the last was woken by Nova
        d = e.get("detail") or {}
        return f" r{d.get('reads')}{'w' if d.get('woken_by_nova') else ''}"

    spans = sorted((e["started_at"] - first, e["ended_at"] - first, seen(e)) for e in moved)
    print(
        f"level {level}, {n} servers: each server's start and end, s after the first "
        "(rN: its arrival read N times, w: the last read woken by Nova's notification): "
        + ", ".join(f"{a:.1f}-{b:.1f}{how}" for a, b, how in spans),
        flush=True,
    )
    print(
        f"level {level}, {n} servers: each server, running to recovered: median "
        f"{statistics.median(each):.2f} s, p90 {percentile(each, 0.9):.2f} s; "
        f"busy: {cpu_since(cpu0, time.monotonic() - t0)}",
        flush=True,
    )
    return {
        "level": level,
        "servers": n,
        "detection": at["V"] - at["T00"],
        "fencing": (at["R1"] - at["T02"]) if at.get("R1") else 0.0,
        "until_first": at["R2"] - at["V"],
        "evacuations": at["R3"] - at["R2"],
        "from_verdict": at["R3"] - at["V"],
        "total": at["R3"] - at["T00"],
    }


def report(
    rows: list[dict[str, Any]],
    floor_s: dict[int, list[float]],
    concurrency: int,
    docs: Path | None,
    section: str,
) -> None:
    """One line per (level, size): each stage's median over its runs; the target is
    judged on medians, medevac's against the floor's of the same size."""
    cases: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault((r["level"], r["servers"]), []).append(r)
    stages = ("detection", "fencing", "until_first", "evacuations", "from_verdict", "total")
    med = {
        case: {k: statistics.median(r[k] for r in runs) for k in stages}
        for case, runs in cases.items()
    }
    floor = {n: statistics.median(v) for n, v in floor_s.items()}
    lines = [
        "| level | servers | runs | detection | fencing | verdict to first evacuation | "
        "evacuations | verdict to all recovered | fault to all recovered (each run) "
        "| floor (bare client; each run) | target: fencing + 1.2x floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def each(values: list[float]) -> str:
        return "" if len(values) < 2 else " (" + ", ".join(f"{v:.1f}" for v in values) + ")"

    for (level, n), m in med.items():
        target = m["fencing"] + 1.2 * floor[n]
        verdict = "met" if m["from_verdict"] <= target else "not met"
        totals = [r["total"] for r in cases[(level, n)]]
        lines.append(
            f"| {level} | {n} | {len(totals)} | {m['detection'] * 1000:.0f} ms | "
            f"{m['fencing'] * 1000:.0f} ms | {m['until_first']:.2f} s | "
            f"{m['evacuations']:.1f} s | {m['from_verdict']:.1f} s | "
            f"{m['total']:.1f} s{each(totals)} | {floor[n]:.1f} s{each(floor_s[n])} | "
            f"{target:.1f} s: {verdict if level == 2 else 'n/a'} |"
        )
    masakari = statistics.median(floor.values()) if floor else 0.0
    runs = "one run per row" if len(rows) == len(med) else "medians of the runs"
    lines += [
        "",
        f"Evacuations {concurrency} at a time, medevac and the bare client alike; {runs} "
        f"(each run fences a host for good). Masakari for scale: {MASAKARI_WAIT:.0f} s "
        f"of waiting after the service is disabled, before the first evacuation, then its "
        f"evacuations 3 at a time (at least {MASAKARI_WAIT + masakari:.0f} s on this lab).",
    ]
    body = "\n".join(lines)
    print(body)
    if docs:
        chart = write_chart(
            docs,
            section,
            "fault to all servers recovered (s), per level and servers on the host",
            [f"level {level}, {n}" for level, n in med],
            {
                "medevac": [m["total"] for m in med.values()],
                "floor: bare client": [floor[n] for _, n in med],
            },
            "s",
            marks={
                "target: fencing + 1.2x floor": [
                    m["fencing"] + 1.2 * floor[n] if level == 2 else None
                    for (level, n), m in med.items()
                ]
            },
        )
        write_section(docs, section, body + "\n\n" + chart)


if __name__ == "__main__":
    main()

"""Detection latency on the lab: fault injected (T00) to the monitor's verdict.

Starts a lab and a real `medevac serve` against it, then injects `host-crash` and
`power-loss` in turn on a host, `--runs` times each, healing in between. Prints
median, p99 (from 100 runs or more) and max per fault kind, and can write them into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import tail, tail_name, wait
from docs_section import write_chart, write_section

from medevac.lab.client import LabClient, lab_down, lab_up
from medevac.lab.layout import LabPaths

EXPECTED = {"host-crash": "HOST_UNREACHABLE", "power-loss": "HOST_DOWN"}
HOST_LOST = ("HOST_UNREACHABLE", "HOST_DOWN")


SETTLE = 2.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--write-docs", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        info = lab_up(paths, 3, 1)
        # Detection only: recovery would fence host1, and each run needs it back.
        env = {
            **os.environ,
            "MEDEVAC_CONFIG": info["controller_config"],
            "MEDEVAC_RECOVERY__ENABLED": "false",
        }
        serve = subprocess.Popen(
            [sys.executable, "-m", "medevac", "serve"], env=env, stderr=subprocess.DEVNULL
        )
        headers = {"X-Auth-Token": info["admin_token"]}
        url = info["controller_url"]
        client = LabClient(paths)

        def get(path: str) -> Any:
            try:
                return httpx.get(url + path, headers=headers, timeout=10).json()
            except httpx.HTTPError:
                return None

        def all_up() -> bool:
            hosts = get("/v1/hosts")
            return bool(hosts) and all(h["state"] == "UP" for h in hosts["hosts"])

        results: dict[tuple[str, str], list[float]] = {}
        try:
            wait("hosts UP", all_up, 60)
            for run in range(args.runs):
                for kind, verdict in EXPECTED.items():
                    seen = len(get("/v1/verdicts")["verdicts"])
                    learned = next(h for h in get("/v1/hosts")["hosts"] if h["name"] == "host1")
                    record = client.inject(kind, "host1")

                    def found(verdict: str = verdict, seen: int = seen) -> Any:
                        got = [
                            v
                            for v in get("/v1/verdicts")["verdicts"][seen:]
                            if v["host"] == "host1" and v["kind"] in HOST_LOST
                        ]
                        return got if any(v["kind"] == verdict for v in got) else None

                    got = wait(f"{verdict} (run {run})", found)
                    first, final = got[0], next(v for v in got if v["kind"] == verdict)
                    results.setdefault((kind, "first host verdict"), []).append(
                        first["at"] - record["time"]
                    )
                    results.setdefault((kind, verdict), []).append(final["at"] - record["time"])
                    # Where the first verdict's time went: noticing the silence (T01),
                    # then confirming it (probes unanswered, the BMC's answer or its wait).
                    noticed = first["evidence"].get("raw_received_at")
                    if noticed is None:
                        raise RuntimeError(f"run {run}: {kind}: first verdict {first}")
                    results.setdefault((kind, "silence noticed (T01)"), []).append(
                        noticed - record["time"]
                    )
                    results.setdefault((kind, "T01 to verdict"), []).append(first["at"] - noticed)
                    # The silence the detector waited for, from the last heartbeat's send
                    # time, and what it had learned then: the tail's explanation.
                    last_sent = first["evidence"].get("last_heartbeat_sent_at")
                    if last_sent is not None:
                        results.setdefault((kind, "last heartbeat to T01"), []).append(
                            noticed - last_sent
                        )
                    detector = learned["detector"]
                    results.setdefault((kind, "learned gap std (at the fault)"), []).append(
                        detector["std_s"]
                    )
                    print(
                        f"run {run} {kind}: verdict {1000 * (first['at'] - record['time']):.0f} ms,"
                        f" T01 {1000 * (noticed - record['time']):.0f} ms, last heartbeat "
                        f"{1000 * ((last_sent or 0) - record['time']):+.0f} ms, learned mean "
                        f"{1000 * detector['mean_interval_s']:.0f} ms std "
                        f"{1000 * detector['std_s']:.0f} ms",
                        flush=True,
                    )
                    client.heal(kind, "host1")
                    wait("host1 UP again", all_up, 60)
                    # A host that just came back has a detector learning afresh; a fault
                    # strikes a host that has been up a while (20 heartbeats here).
                    time.sleep(SETTLE)
        finally:
            serve.terminate()
            serve.wait(timeout=20)
            client.close()
            lab_down(paths)
    rows = []
    for (kind, what), values in results.items():
        ms = [v * 1000 for v in values]
        name, far = tail(ms)
        row = (kind, what, len(ms), statistics.median(ms), far, max(ms))
        rows.append(row)
        p99 = f"p99 {far:.0f} ms, " if name == "p99" else ""  # else it is the max below
        print(f"{kind} -> {what}: median {row[3]:.0f} ms, {p99}max {row[5]:.0f} ms, n={row[2]}")
    if args.write_docs:
        # The tail's own column only when some row has 100 runs or more: with fewer,
        # the tail is the max, which has its column already.
        column = tail_name(*results.values())
        heads = ["fault", "until", "runs", "median", *([column] if column != "max" else []), "max"]
        table = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for r in rows:
            cells = [r[0], r[1], str(r[2]), *(f"{x:.0f} ms" for x in r[3:])]
            if column == "max":
                del cells[4]  # the tail, the same as the max
            table.append("| " + " | ".join(cells) + " |")
        timed = [r for r in rows if not r[1].startswith("learned")]
        timed_samples = [
            values for (_, what), values in results.items() if not what.startswith("learned")
        ]
        chart = write_chart(
            args.write_docs,
            "detection",
            "fault injected to verdict (ms)",
            [f"{r[0]}:\n{r[1]}" for r in timed],
            {"median": [r[3] for r in timed]},
            "ms",
            whiskers=(tail_name(*timed_samples), {"median": [r[4] for r in timed]}),
            marks={"target p99": [300.0 if "first" in r[1] else None for r in timed]},
        )
        write_section(
            args.write_docs,
            "detection",
            "\n".join(table) + "\n\n" + chart,
            note="Heartbeats every 100 ms, phi threshold 8.",
        )


if __name__ == "__main__":
    main()

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
    p.add_argument(
        "--controllers",
        default="1",
        help="labs to measure in turn, by their number of controllers: 1, or 1,3",
    )
    p.add_argument("--write-docs", type=Path)
    args = p.parse_args()
    counts = [int(n) for n in args.controllers.split(",")]
    started = time.monotonic()
    measured: dict[int, dict[tuple[str, str], list[float]]] = {}
    took: dict[int, float] = {}
    for n in counts:
        t0 = time.monotonic()
        measured[n] = measure(args.runs, n)
        took[n] = time.monotonic() - t0
        print(f"{n} controller(s): {took[n]:.0f} s", flush=True)
    for n, results in measured.items():
        if len(counts) > 1:
            print(f"--- {n} controller{'s' if n > 1 else ''}")
        summarize(results, args.write_docs if n == 1 else None)
    if len(counts) > 1:
        compare(measured, args.write_docs)
    print(f"detection benchmark: {time.monotonic() - started:.0f} s")


Serving = list[tuple[str | None, str, "subprocess.Popen[bytes]"]]


def start_controllers(info: dict[str, Any], log_dir: Path) -> Serving:
    """Each controller the lab configured (one, or several), started with recovery off:
    (member id, API URL, process)."""
    several = info.get("controllers") or []
    started: Serving = []
    if len(several) > 1:
        for c in several:
            env = {
                **os.environ,
                "MEDEVAC_CONFIG": str(c["config"]),
                "MEDEVAC_RECOVERY__ENABLED": "false",
            }
            with (log_dir / f"controller-{c['member_id']}.log").open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "medevac", "serve"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            started.append((str(c["member_id"]), str(c["url"]), proc))
        return started
    # Detection only: recovery would fence host1, and each run needs it back.
    env = {
        **os.environ,
        "MEDEVAC_CONFIG": info["controller_config"],
        "MEDEVAC_RECOVERY__ENABLED": "false",
    }
    serve = subprocess.Popen(
        [sys.executable, "-m", "medevac", "serve"], env=env, stderr=subprocess.DEVNULL
    )
    return [(None, str(info["controller_url"]), serve)]


def measure(runs: int, controllers: int) -> dict[tuple[str, str], list[float]]:
    """``runs`` of each fault on host1 of a lab with ``controllers`` controllers; the
    verdicts read from host1's owner (the only one to give them)."""
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        info = lab_up(paths, 3, 1, controllers=controllers)
        serving = start_controllers(info, Path(d))
        headers = {"X-Auth-Token": info["admin_token"]}
        url = serving[0][1]
        client = LabClient(paths)

        def get(path: str, at: str | None = None) -> Any:
            try:
                return httpx.get((at or url) + path, headers=headers, timeout=10).json()
            except httpx.HTTPError:
                return None

        def all_up() -> bool:
            hosts = get("/v1/hosts")
            return bool(hosts) and all(h["state"] == "UP" for h in hosts["hosts"])

        def shared() -> bool:
            """Several: every controller sees all of them, each host has one owner."""
            owned: list[str] = []
            for _, at, _ in serving:
                view = get("/v1/cluster", at)
                if not view or len(view["members"]) != len(serving):
                    return False
                owned += view["hosts"]
            return sorted(owned) == sorted(info["hosts"])

        def owner_of(host: str) -> str | None:
            for _, at, _ in serving:
                view = get("/v1/cluster", at)
                if view and host in view["hosts"]:
                    return at
            return None

        results: dict[tuple[str, str], list[float]] = {}
        try:
            if controllers > 1:
                wait("the hosts shared out", shared, 120)
                url = wait("host1's owner", lambda: owner_of("host1"), 30)
                member = next(m for m, at, _ in serving if at == url)
                print(f"{controllers} controllers; host1 owned by {member}", flush=True)
            wait("hosts UP", all_up, 60)
            for run in range(runs):
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
                    quorum = first["evidence"].get("quorum")
                    if controllers > 1 and (quorum or {}).get("agreement") != "agreed":
                        raise RuntimeError(f"run {run}: {kind}: verdict without quorum {first}")
                    agreed = f", quorum {quorum['silent']}/{quorum['needed']}" if quorum else ""
                    print(
                        f"run {run} {kind}: verdict {1000 * (first['at'] - record['time']):.0f} ms,"
                        f" T01 {1000 * (noticed - record['time']):.0f} ms, last heartbeat "
                        f"{1000 * ((last_sent or 0) - record['time']):+.0f} ms, learned mean "
                        f"{1000 * detector['mean_interval_s']:.0f} ms std "
                        f"{1000 * detector['std_s']:.0f} ms{agreed}",
                        flush=True,
                    )
                    client.heal(kind, "host1")
                    wait("host1 UP again", all_up, 60)
                    # A host that just came back has a detector learning afresh; a fault
                    # strikes a host that has been up a while (20 heartbeats here).
                    time.sleep(SETTLE)
            if controllers > 1:
                # A suspicion the others did not share gives no verdict and is looked
                # at again later: how often that happened on the way to these verdicts.
                logs = [Path(d) / f"controller-{m}.log" for m, _, _ in serving]
                held = sum(f.read_text(errors="replace").count("no verdict on ") for f in logs)
                print(f"suspicions without a quorum (no verdict, asked again): {held}")
                if owner_of("host1") != url:
                    raise RuntimeError("host1 changed owner during the runs")
        finally:
            for _, _, proc in serving:
                proc.terminate()
            for _, _, proc in serving:
                proc.wait(timeout=20)
            client.close()
            lab_down(paths)
    return results


def summarize(results: dict[tuple[str, str], list[float]], docs: Path | None) -> None:
    """Prints median, tail and max of each figure; writes the `detection` section."""
    rows = []
    for (kind, what), values in results.items():
        ms = [v * 1000 for v in values]
        name, far = tail(ms)
        row = (kind, what, len(ms), statistics.median(ms), far, max(ms))
        rows.append(row)
        p99 = f"p99 {far:.0f} ms, " if name == "p99" else ""  # else it is the max below
        print(f"{kind} -> {what}: median {row[3]:.0f} ms, {p99}max {row[5]:.0f} ms, n={row[2]}")
    if docs:
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
            docs,
            "detection",
            "fault injected to verdict (ms)",
            [f"{r[0]}:\n{r[1]}" for r in timed],
            {"median": [r[3] for r in timed]},
            "ms",
            whiskers=(tail_name(*timed_samples), {"median": [r[4] for r in timed]}),
            marks={"target p99": [300.0 if "first" in r[1] else None for r in timed]},
        )
        write_section(
            docs,
            "detection",
            "\n".join(table) + "\n\n" + chart,
            note="Heartbeats every 100 ms, phi threshold 8.",
        )


def compare(measured: dict[int, dict[tuple[str, str], list[float]]], docs: Path | None) -> None:
    """Each figure of every lab against the first lab's (one controller), measured in
    the same run: medians, tails and their ratios; writes `detection-controllers`."""
    base_n, *others = list(measured)
    base = measured[base_n]
    figures = [k for k in base if not k[1].startswith("learned")]
    lines = []
    for key in figures:
        b = base[key]
        for n in others:
            v = measured[n].get(key)
            if not v:
                continue
            (bname, btail), (name, far) = tail(b), tail(v)
            ratio_med = statistics.median(v) / statistics.median(b)
            lines.append((key, n, b, v, ratio_med, far / btail))
            print(
                f"{key[0]} -> {key[1]}: {base_n} controller median "
                f"{statistics.median(b) * 1000:.0f} ms {bname} {btail * 1000:.0f} ms "
                f"(n={len(b)}); {n} controllers median "
                f"{statistics.median(v) * 1000:.0f} ms {name} {far * 1000:.0f} ms (n={len(v)}); "
                f"ratio median {ratio_med:.2f}x, {name} {far / btail:.2f}x"
            )
    if not docs or not lines:
        return
    column = tail_name(*[x for line in lines for x in (line[2], line[3])])
    heads = [
        "fault",
        "until",
        "controllers",
        "runs",
        "median",
        column,
        "median ratio",
        "tail ratio",
    ]
    table = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for (kind, what), n, b, v, rm, rt in lines:
        for count, values, ratios in ((base_n, b, ("", "")), (n, v, (f"{rm:.2f}x", f"{rt:.2f}x"))):
            cells = [kind, what, str(count), str(len(values))]
            cells += [
                f"{statistics.median(values) * 1000:.0f} ms",
                f"{tail(values)[1] * 1000:.0f} ms",
            ]
            table.append("| " + " | ".join([*cells, *ratios]) + " |")
    counts = [base_n, *others]
    # The chart: the verdict and its two parts (the table has every figure).
    charted = ("first host verdict", "silence noticed (T01)", "T01 to verdict")
    shown = [k for k in figures if k[1] in charted and any(line[0] == k for line in lines)]
    label = {c: f"{c} controller{'s' if c > 1 else ''}" for c in counts}
    chart = write_chart(
        docs,
        "detection-controllers",
        "fault injected to verdict (ms), one controller and several",
        [
            f"{k[0]}:\n{k[1].replace('silence noticed ', '').replace('first host ', '')}"
            for k in shown
        ],
        {label[c]: [statistics.median(measured[c][k]) * 1000 for k in shown] for c in counts},
        "ms",
        whiskers=(
            column,
            {label[c]: [tail(measured[c][k])[1] * 1000 for k in shown] for c in counts},
        ),
        marks={"target p99": [300.0 if "first" in k[1] else None for k in shown]},
    )
    write_section(
        docs,
        "detection-controllers",
        "\n".join(table) + "\n\n" + chart,
        note=(
            "Heartbeats every 100 ms, phi threshold 8; each lab in turn in the same run, "
            "the verdicts from host1's owner (with several, after a majority of the "
            "controllers agreed host1 was silent); ratios: several against one."
        ),
    )


if __name__ == "__main__":
    main()

"""The benchmarks run (a few seconds of each), so their code cannot rot."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "heartbeats.py"


def test_heartbeat_benchmark_smoke() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--soak-seconds",
            "3",
            "--soak-hosts",
            "5",
            "--ingest-hosts",
            "200",
            "--ingest-seconds",
            "3",
            "--ingest-runs",
            "1",
            "--bursty-seconds",
            "3",
            "--cluster-hosts",
            "300",
            "--cluster-seconds",
            "2",
            "--quiet-wait",
            "0",  # the suite keeps the machine busy: figures are not the point here
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    soak = ast.literal_eval(lines["soak"])
    bursties = [
        ast.literal_eval(line.split(": ", 1)[1])
        for line in result.stdout.splitlines()
        if line.startswith("bursty soak: ")
    ]
    assert [b["controllers"] for b in bursties] == [1, 3]
    bursty = bursties[0]
    # Three controllers: every agent sends to each, through a link of its own.
    assert bursties[1]["datagrams"] > 2.5 * bursty["datagrams"]
    ingest = ast.literal_eval(lines["ingest summary"])
    cluster = ast.literal_eval(lines["cluster ingest summary"])
    assert soak["heartbeats"] > 5 * 3 * 5  # 5 hosts, 10 Hz, 3 s, minus losses
    assert soak["false_positive_verdicts"] == 0
    # Bursty losses may fool the detector (docs/benchmarks.md says how often): counted.
    assert bursty["heartbeats"] > 5 * 3 * 5 * 0.8 and bursty["datagrams"] >= 5 * 3 * 10
    assert bursty["model"]["p_bad_to_good"] > bursty["model"]["p_good_to_bad"] > 0
    for endpoint in ("draining", "asyncio"):
        assert ingest[endpoint]["received"] == ingest[endpoint]["sent"] > 0
    for controllers, owned in ((1, [300]), (3, None)):
        each = cluster["by"][controllers]
        assert each["read"] == each["sent"] == controllers * 300 * 2  # 300 hosts, 2 s
        assert len(each["cpu_pct"]) == controllers and each["false"] == 0
        assert sum(each["owned"]) == 300 and (owned is None or each["owned"] == owned)


def run_bench(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH.parent / script), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_notify_path_benchmark_smoke_writes_its_section_and_chart(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    out = run_bench(
        "notify_path.py", "--runs", "2", "--sizes", "1,5", "--background", "20",
        "--write-docs", str(docs),
    )  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| 5 |")]
    assert rows and rows[0].endswith("| 2 |")  # two runs of five webhooks each arrived
    text = docs.read_text()
    assert "<!-- bench:notify_path:start -->" in text and rows[0] in text
    assert "![the notifier alone" in text
    assert (tmp_path / "bench-notify_path.png").read_bytes()[:4] == b"\x89PNG"


def test_topology_benchmark_smoke() -> None:
    out = run_bench("topology.py", "--servers", "2000", "--per-host", "20")
    assert "| 2,000 | 100 |" in out

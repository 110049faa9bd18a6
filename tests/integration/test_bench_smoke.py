"""The heartbeat benchmark runs (a few seconds of it), so its code cannot rot."""

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
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    soak = ast.literal_eval(lines["soak"])
    ingest = ast.literal_eval(lines["ingest"])
    assert soak["heartbeats"] > 5 * 3 * 5  # 5 hosts, 10 Hz, 3 s, minus losses
    assert soak["false_positive_verdicts"] == 0
    assert ingest["received"] == ingest["sent"] > 0

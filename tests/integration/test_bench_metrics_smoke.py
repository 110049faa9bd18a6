"""The scrape benchmark runs (a few renders), so its code cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "metrics_scrape.py"


def test_metrics_scrape_benchmark_smoke() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--hosts", "5", "50", "--runs", "3", "--api-runs", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["5 hosts", "50 hosts"], result.stdout
    assert all("render median" in line and "GET /metrics median" in line for line in lines)

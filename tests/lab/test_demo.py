"""`medevac demo`, the README's main command, runs to the end and cleans up."""

from __future__ import annotations

from pathlib import Path

from tests.lab.conftest import lab_processes, medevac


def test_demo_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    result = medevac("demo", "--state-dir", str(tmp_path), timeout=600)
    out = result.stdout
    assert "injecting host-crash on host1" in out
    assert "host_status UNKNOWN" in out
    assert "host_status=DOWN" in out
    assert "evacuated" in out
    assert "invariant holds: no server runs on two hosts" in out
    assert "lab stopped" in out
    assert lab_processes(tmp_path) == []


def test_demo_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    result = medevac("demo", "--scenario", "meteor", "--state-dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "unknown scenario 'meteor'" in result.stderr
    assert lab_processes(tmp_path) == []

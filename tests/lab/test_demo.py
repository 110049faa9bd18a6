"""`medevac demo`, the README's main command: runs to the end, profiles the fault in
full, and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medevac.profiler.profile import CHECKPOINTS
from tests.lab.conftest import lab_processes, medevac
from tests.otlp import OtlpReceiver


def run_demo(
    tmp_path: Path, scenario: str, env: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "out"
    result = medevac(
        "demo",
        "--scenario",
        scenario,
        "--state-dir",
        str(tmp_path),
        "--output",
        str(out),
        timeout=300,
        env=env,
    )
    assert lab_processes(tmp_path) == []
    assert (out / "profile.png").stat().st_size > 10_000
    assert "<svg" in (out / "profile.html").read_text()
    return result.stdout, json.loads((out / "profile.json").read_text())


def assert_complete_profile(profile: dict[str, Any]) -> None:
    stamps = {c["name"]: c["at"] for c in profile["checkpoints"]}
    assert profile["t00_source"] == "injected"
    assert profile["missing"] == [], profile["missing"]
    assert set(stamps) == {c.name for c in CHECKPOINTS}
    # Ordered: each checkpoint after every checkpoint it waits for.
    assert profile["violations"] == []
    for c in CHECKPOINTS:
        for before in c.after:
            assert stamps[before] <= stamps[c.name], (before, c.name)
    goals = {g["name"]: g for g in profile["goals"]}
    assert set(goals) == {"notification", "correction", "recovery"}
    for g in goals.values():
        assert g["total_s"] == pytest.approx(stamps[g["end"]] - stamps["T00"])
        assert sum(c["seconds"] for c in g["components"]) == pytest.approx(g["total_s"])
        assert sum(c["share"] for c in g["components"]) == pytest.approx(1.0)
    assert goals["notification"]["end"] == "T09"
    assert goals["recovery"]["end"] == "R3"


def test_demo_host_crash_is_profiled_from_t00_to_r3(tmp_path: Path) -> None:
    with OtlpReceiver() as collector:
        out, profile = run_demo(
            tmp_path,
            "host-crash",
            {
                "MEDEVAC_PROFILER__OTEL_EXPORTER": "otlp",
                "MEDEVAC_PROFILER__OTEL_ENDPOINT": collector.url,
            },
        )
    assert "injecting host-crash on host1" in out
    assert "fault to alarm received" in out and "percentage" in out  # the profile table
    assert "recovery recover-" in out and "COMPLETED" in out
    assert "alarms: 5 received for the 5 servers of host1, 0 duplicates" in out
    assert "invariant holds: no server ran on two hosts" in out
    assert "lab stopped" in out
    assert_complete_profile(profile)
    # The controller exported the same fault as OpenTelemetry spans when it ended.
    roots = [s for s in collector.spans if s["name"] == "medevac.fault"]
    assert [r["attributes"]["medevac.incident_id"] for r in roots] == [profile["incident_id"]]
    children = {s["attributes"]["medevac.checkpoint"] for s in collector.spans if s is not roots[0]}
    assert children == {c.name for c in CHECKPOINTS} - {"T00"}


def test_demo_partition_fences_before_evacuating(tmp_path: Path) -> None:
    out, profile = run_demo(tmp_path, "partition")
    assert "injecting mgmt-partition on host1" in out
    assert "fenced through IPMI after" in out
    assert_complete_profile(profile)
    stamps = {c["name"]: c["at"] for c in profile["checkpoints"]}
    assert stamps["R1"] < stamps["R2"]


def test_demo_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    result = medevac("demo", "--scenario", "meteor", "--state-dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "unknown scenario 'meteor'" in result.stderr
    assert lab_processes(tmp_path) == []

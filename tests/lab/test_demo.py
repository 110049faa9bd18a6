"""`medevac demo`, the README's main command: runs to the end, profiles the fault in
full, and leaves nothing behind."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from medevac.profiler.profile import CHECKPOINTS
from tests.conftest import wait_for
from tests.lab.conftest import Controller, lab_processes, medevac, ok, openstack, start_lab
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


def test_demo_controller_kill_is_finished_by_another_controller(tmp_path: Path) -> None:
    out, profile = run_demo(tmp_path, "controller-kill")
    assert "3 controllers on postgresql" in out
    assert re.search(r"ctl-\d \(pid \d+\), the owner of host1, killed \(SIGKILL\)", out), out
    assert "who owned host1 when" in out and "the takeover's timeline" in out
    assert "host re-owned" in out and "recovery resumed" in out
    assert re.search(r"ctl-\d finished ctl-\d's recovery: each of the 4 HA servers", out), out
    assert "invariant holds: no server ran on two hosts" in out
    stamps = {c["name"]: c["at"] for c in profile["checkpoints"]}
    assert stamps["R1"] <= stamps["R3"]
    assert not (tmp_path / "cluster.json").exists()  # lab down dropped its database


def test_demo_partition_fences_before_evacuating(tmp_path: Path) -> None:
    out, profile = run_demo(tmp_path, "partition")
    assert "injecting mgmt-partition on host1" in out
    assert "fenced through IPMI after" in out
    assert_complete_profile(profile)
    stamps = {c["name"]: c["at"] for c in profile["checkpoints"]}
    assert stamps["R1"] < stamps["R2"]
    a_new_lab_in_the_same_place_recovers_host1_again(tmp_path, profile["incident_id"])


def a_new_lab_in_the_same_place_recovers_host1_again(state_dir: Path, demo_incident: str) -> None:
    """After the demo, a new lab in its state dir, keeping the demo's controller store
    (the demo's incident of host1 still open there): host1 partitioned is recovered."""
    lab_gen = start_lab(state_dir, hosts=4, servers_per_host=4, keep_store=True)
    lab = next(lab_gen)
    try:
        ha = [s for s in lab.servers_on("host1")]
        for s in ha:
            ok(openstack(lab, "server", "set", "--property", "HA_Enabled=True", s["id"]))
        ctl = Controller.start(lab)
        try:
            # The demo's incident named servers this lab never had: Nova shows host1 in
            # service, so the controller closes it once started (its ports' topology loaded
            # and the store written), before any new verdict.
            def closed() -> dict[str, Any] | None:
                incident: dict[str, Any] = ctl.get(f"/v1/incidents/{demo_incident}")
                return incident if incident["state"] == "CLOSED" else None

            old = wait_for("the demo's stale incident to close", closed, 20)
            assert old["closed_by"].startswith("released by the cloud"), old
            t0 = time.time()
            lab.client.inject("mgmt-partition", "host1")

            def recovered() -> dict[str, Any] | None:
                recs = ctl.get("/v1/recoveries?host=host1")["recoveries"]
                done = [r for r in recs if r["started_at"] >= t0 and r["ended_at"]]
                return done[0] if done else None

            rec = wait_for("host1 recovered", recovered, 90, 0.2)
            assert rec["state"] == "COMPLETED", rec
            now = {s["id"]: s for s in lab.status()["servers"]}
            assert all(now[s["id"]]["host"] != "host1" for s in ha), [now[s["id"]] for s in ha]
            lab.no_server_runs_twice()
        finally:
            ctl.stop()
    finally:
        next(lab_gen, None)


def test_a_new_lab_starts_its_controller_on_an_empty_store_and_a_keystone(tmp_path: Path) -> None:
    """`lab up` with no --identity: Keystone is the lab's identity by default."""
    (tmp_path / "medevac.db").write_text("a previous lab's store")
    (tmp_path / "medevac-workflows.db").write_text("its workflows")
    out = medevac(
        "lab", "up", "--hosts", "2", "--servers-per-host", "0", "--state-dir", str(tmp_path)
    )
    try:
        assert "empty store" in out.stdout
        info = json.loads((tmp_path / "lab.json").read_text())
        assert info["keystone"]["auth_url"].startswith("http://127.0.0.1:")
        assert "[keystone]" in Path(info["controller_config"]).read_text()
        assert not (tmp_path / "medevac.db").exists()
        assert not (tmp_path / "medevac-workflows.db").exists()
    finally:
        medevac("lab", "down", "--state-dir", str(tmp_path))


def test_demo_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    result = medevac("demo", "--scenario", "meteor", "--state-dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "unknown scenario 'meteor'" in result.stderr
    assert lab_processes(tmp_path) == []

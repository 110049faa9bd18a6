"""Recovery against the lab: fenced through real IPMI, evacuated through real Nova,
durable across a SIGKILL, and never a server on two hosts.

Its own lab of 6 hosts (each test fails a different host; the last two stay as
destinations) and a real `medevac serve`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.lab.conftest import Controller, RunningLab, start_lab

ENDED = {"COMPLETED", "PARTIAL", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}


@pytest.fixture(scope="module")
def rlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("recovery-lab"), hosts=6, servers_per_host=2)


@pytest.fixture(scope="module")
def ctl(rlab: RunningLab) -> Iterator[Controller]:
    controller = Controller.start(
        rlab,
        MEDEVAC_INSPECTOR__GUARD_WINDOW="2",  # hosts failed by earlier tests stay lost
        MEDEVAC_RECOVERY__CHECK_INTERVAL="0.25",
        MEDEVAC_RECOVERY__CHECK_MAX_COUNT="6",
    )
    try:
        yield controller
    finally:
        if controller.proc.poll() is None:
            controller.stop()


class TwoHostWatch:
    """Polls `lab running` in the background: any server on two hosts at any sample."""

    def __init__(self, lab: RunningLab) -> None:
        self.lab = lab
        self.samples = 0
        self.twice: list[dict[str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            running = self.lab.client.running()
            self.samples += 1
            doubled = {s: h for s, h in running.items() if len(h) > 1}
            if doubled:
                self.twice.append(doubled)
            self._stop.wait(0.1)

    def __enter__(self) -> TwoHostWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def recovery_of(ctl: Controller, host: str, after: float) -> dict[str, Any] | None:
    for r in ctl.get(f"/v1/recoveries?host={host}")["recoveries"]:
        if r["started_at"] >= after:
            return dict(ctl.get(f"/v1/recoveries/{r['id']}"))
    return None


def wait_recovery(ctl: Controller, host: str, after: float, within: float = 90) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        r = recovery_of(ctl, host, after)
        return r if r is not None and r["state"] in ENDED else None

    return wait_for(f"{host}'s recovery to end", ended, within, 0.2)


def ha_servers(lab: RunningLab, host: str) -> list[dict[str, Any]]:
    return [s for s in lab.servers_on(host) if s["metadata"].get("HA_Enabled") == "True"]


def assert_recovered(lab: RunningLab, host: str, before: list[dict[str, Any]]) -> None:
    now = {s["id"]: s for s in lab.status()["servers"]}
    for s in before:
        moved = now[s["id"]]
        assert moved["host"] != host and moved["status"] == "ACTIVE", moved


def test_host_crash_is_fenced_then_its_ha_servers_evacuated(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host1"
    ha = ha_servers(rlab, host)
    others = {s["id"] for s in rlab.servers_on(host)} - {s["id"] for s in ha}
    assert ha, "the lab gives host1 an HA server"
    t0 = time.time()
    with TwoHostWatch(rlab) as watch:
        rlab.client.inject("host-crash", host)
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", rec
    assert rec["detail"]["fencing"]["confirmed"]
    assert rlab.host(host)["bmc"]["power"] == "off"  # fenced through its BMC
    assert_recovered(rlab, host, ha)
    assert all(s["host"] == host for s in rlab.status()["servers"] if s["id"] in others)
    assert sorted(e["server_id"] for e in rec["evacuations"]) == sorted(s["id"] for s in ha)
    assert all(e["result"] == "recovered" for e in rec["evacuations"])
    svc = rlab.host(host)["nova"]
    assert svc["forced_down"] and svc["status"] == "disabled", svc
    assert watch.samples > 5 and watch.twice == []
    history = ctl.get(f"/v1/history?host={host}")["evacuations"]
    assert len(history) == len(ha)


def test_partitioned_host_is_fenced_before_anything_runs_elsewhere(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host2"
    ha = ha_servers(rlab, host)
    t0 = time.time()
    with TwoHostWatch(rlab) as watch:
        rlab.client.inject("mgmt-partition", host)  # alive, guests running, unreachable
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", rec
    assert watch.twice == [], f"servers ran on two hosts: {watch.twice[:3]}"
    fenced_at = rec["detail"]["fencing"]
    assert fenced_at["confirmed"]
    assert_recovered(rlab, host, ha)
    audit = ctl.get(f"/v1/audit?subject={host}&limit=200")["events"]
    kinds = [e["kind"] for e in reversed(audit)]  # oldest first
    assert kinds.index("recovery.fenced") < kinds.index("recovery.evacuating")


def test_unreachable_bmc_means_no_evacuation_and_fencing_failed(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host3"
    before = {s["id"] for s in rlab.servers_on(host)}
    t0 = time.time()
    rlab.client.inject("bmc-unreachable", host)
    rlab.client.inject("host-crash", host)
    try:
        rec = wait_recovery(ctl, host, t0)
        assert rec["state"] == "FENCING_FAILED", rec
        assert rec["evacuations"] == []
        assert {s["id"] for s in rlab.servers_on(host)} == before  # nothing moved
        svc = rlab.host(host)["nova"]
        assert svc["forced_down"], svc  # left forced down for an operator
        audit = [e["kind"] for e in ctl.get(f"/v1/audit?subject={host}")["events"]]
        assert "recovery.fencing_failed" in audit
    finally:
        rlab.client.heal("bmc-unreachable", host)


def test_a_controller_killed_mid_evacuation_finishes_the_recovery_once(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host4"
    ha = ha_servers(rlab, host)
    t0 = time.time()
    with TwoHostWatch(rlab) as watch:
        rlab.client.inject("host-crash", host)

        def evacuating() -> bool:
            r = recovery_of(ctl, host, t0)
            return r is not None and r["state"] == "EVACUATING"

        wait_for("the evacuations to start", evacuating, 60, 0.05)
        ctl.kill()
        ctl.restart()
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", rec
    assert_recovered(rlab, host, ha)
    assert sorted(e["server_id"] for e in rec["evacuations"]) == sorted(s["id"] for s in ha)
    assert watch.twice == []
    # One recovery for the incident, whatever the restart did.
    assert len(ctl.get(f"/v1/recoveries?host={host}")["recoveries"]) == 1

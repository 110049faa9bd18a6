"""The monitor against the lab: each injected fault gives exactly the right verdict.

A real `medevac serve` runs with the configuration `lab up` wrote; the lab's hosts
run the real agent code. Verdicts are read from the controller's API.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import wait_for
from tests.lab.conftest import VERDICT_WITHIN, Controller, RunningLab

HOSTS = [f"host{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def controller(lab: RunningLab) -> Iterator[Controller]:
    # Observe only: these tests are about verdicts, and the shared lab must stay as
    # it is for the tests after them (the inspector's actions have their own lab).
    ctl = Controller.start(lab, MEDEVAC_INSPECTOR__ACT="false")
    try:
        yield ctl
    finally:
        ctl.stop()


def host_verdicts(ctl: Controller, after: int, host: str) -> list[str]:
    return [v["kind"] for v in ctl.verdicts()[after:] if v["host"] == host]


def test_host_crash_is_unreachable_with_power_on(lab: RunningLab, controller: Controller) -> None:
    n = len(controller.verdicts())
    lab.client.inject("host-crash", "host1")
    v = controller.wait_verdict("HOST_UNREACHABLE", "host1", n)
    # The BMC says "on", or had not answered within the verdict's short BMC wait;
    # either way the monitor reads it as on, and never calls the host DOWN.
    assert v["evidence"]["bmc_power"] == "on" or "no answer" in v["evidence"]["bmc_error"]
    wait_for("BMC read as on", lambda: controller.host("host1")["bmc"]["power"] == "on", 5)
    lab.client.heal("host-crash", "host1")
    controller.wait_verdict("HOST_UP", "host1", n)
    assert "HOST_DOWN" not in host_verdicts(controller, n, "host1")


def test_power_loss_is_host_down(lab: RunningLab, controller: Controller) -> None:
    n = len(controller.verdicts())
    lab.client.inject("power-loss", "host2")
    v = controller.wait_verdict("HOST_DOWN", "host2", n)
    assert v["evidence"]["bmc_power"] == "off"
    lab.client.heal("power-loss", "host2")
    controller.wait_verdict("HOST_UP", "host2", n)


def test_mgmt_partition_is_unreachable_never_down(lab: RunningLab, controller: Controller) -> None:
    n = len(controller.verdicts())
    lab.client.inject("mgmt-partition", "host3")
    controller.wait_verdict("HOST_UNREACHABLE", "host3", n)
    lab.client.heal("mgmt-partition", "host3")
    controller.wait_verdict("HOST_UP", "host3", n)
    assert "HOST_DOWN" not in host_verdicts(controller, n, "host3")


def test_compute_process_down_gives_no_host_verdict(
    lab: RunningLab, controller: Controller
) -> None:
    n = len(controller.verdicts())
    lab.client.inject("compute-process-down", "host4")
    controller.wait_verdict("COMPUTE_PROCESS_DOWN", "host4", n)
    lab.client.heal("compute-process-down", "host4")
    controller.wait_verdict("COMPUTE_PROCESS_UP", "host4", n)
    assert host_verdicts(controller, n, "host4") == ["COMPUTE_PROCESS_DOWN", "COMPUTE_PROCESS_UP"]


def test_link_down_and_up(lab: RunningLab, controller: Controller) -> None:
    n = len(controller.verdicts())
    lab.client.inject("link-down", "host4", "physnet2")
    controller.wait_verdict("LINK_DOWN", "host4", n, subject="physnet2")
    lab.client.heal("link-down", "host4", "physnet2")
    controller.wait_verdict("LINK_UP", "host4", n, subject="physnet2")
    assert host_verdicts(controller, n, "host4") == ["LINK_DOWN", "LINK_UP"]


def test_server_crash_is_server_down(lab: RunningLab, controller: Controller) -> None:
    server = next(
        s for s in lab.status()["servers"] if s["host"] == "host3" and s["status"] == "ACTIVE"
    )
    n = len(controller.verdicts())
    lab.client.inject("server-crash", server["id"])
    try:
        controller.wait_verdict("SERVER_DOWN", "host3", n, subject=server["id"])
    finally:
        lab.client.heal("server-crash", server["id"])


def test_silent_host_with_dead_bmc_is_unreachable_and_says_why(
    lab: RunningLab, controller: Controller
) -> None:
    n = len(controller.verdicts())
    lab.client.inject("bmc-unreachable", "host5")
    lab.client.inject("host-crash", "host5")
    v = controller.wait_verdict("HOST_UNREACHABLE", "host5", n)
    assert v["evidence"]["bmc_power"] is None
    assert v["evidence"]["bmc_error"]
    lab.client.heal("host-crash", "host5")
    lab.client.heal("bmc-unreachable", "host5")
    controller.wait_verdict("HOST_UP", "host5", n)


def test_most_of_a_zone_silent_at_once_is_observer_isolation(
    lab: RunningLab, controller: Controller
) -> None:
    n = len(controller.verdicts())
    lab.client.inject("mgmt-partition", "host1,host2,host3")
    try:
        v = controller.wait_verdict("OBSERVER_ISOLATED", "nova", n)
        assert set(v["evidence"]["silent_hosts"]) >= {"host1", "host2"}
    finally:
        lab.client.heal("mgmt-partition", "host1,host2,host3")
    wait_for(
        "hosts UP again",
        lambda: all(controller.host(h)["state"] == "UP" for h in ("host1", "host2", "host3")),
        VERDICT_WITHIN,
    )
    kinds = [v["kind"] for v in controller.verdicts()[n:]]
    assert "HOST_UNREACHABLE" not in kinds and "HOST_DOWN" not in kinds


def test_doctor_event_for_a_live_host_is_cleared_by_probes(
    lab: RunningLab, controller: Controller
) -> None:
    n = len(controller.verdicts())
    before = controller.get("/v1/hosts")["counters"]["suspicions_cleared"]
    event = [
        {
            "time": "2026-01-01T00:00:00",
            "type": "compute.host.down",
            "details": {
                "hostname": "host4",
                "status": "down",
                "monitor": "test",
                "monitor_event_id": "e1",
            },
        }
    ]
    r = httpx.put(
        controller.url + "/events", json=event, headers={"X-Auth-Token": controller.token}
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1
    wait_for(
        "the suspicion to be cleared",
        lambda: controller.get("/v1/hosts")["counters"]["suspicions_cleared"] > before,
        VERDICT_WITHIN,
    )
    assert host_verdicts(controller, n, "host4") == []
    again = httpx.put(
        controller.url + "/events", json=event, headers={"X-Auth-Token": controller.token}
    )
    assert again.json() == {"accepted": 0, "duplicates": 1, "ignored": 0, "reasons": []}


def test_forged_datagrams_are_dropped_and_counted(lab: RunningLab, controller: Controller) -> None:
    import socket

    port = int(
        next(
            line.split("=")[1]
            for line in lab.paths.controller_config.read_text().splitlines()
            if line.startswith("listen_port")
        )
    )
    before = controller.get("/v1/hosts")["counters"]["dropped"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"garbage", ("127.0.0.1", port))
        s.sendto(b"MDVH\x01" + b"\x00" * 80, ("127.0.0.1", port))  # right shape, no key
    wait_for(
        "drops to be counted",
        lambda: (
            (d := controller.get("/v1/hosts")["counters"]["dropped"])["malformed"]
            > before["malformed"]
            and d["bad_mac"] > before["bad_mac"]
        ),
        5,
    )
    assert all(controller.host(h)["state"] == "UP" for h in HOSTS)


def test_nova_notifications_keep_novas_view_current(
    lab: RunningLab, controller: Controller
) -> None:
    if not lab.info["notifications"]:
        pytest.skip("the lab has no RabbitMQ to publish Nova's notifications on")
    lab.run(lab.driver.set_forced_down("host5", True))
    try:
        wait_for(
            "service.update to reach the monitor",
            lambda: (
                controller.get("/v1/hosts")["counters"]["nova_notifications"].get(
                    "service.update", 0
                )
                > 0
                and controller.host("host5")["nova"]["forced_down"] is True
            ),
            VERDICT_WITHIN,
        )
    finally:
        lab.run(lab.driver.set_forced_down("host5", False))

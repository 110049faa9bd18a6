"""The inspector and notifier against the lab: the cloud told the truth, consumers told.

Its own lab (the state actions change the cloud for good) and a real `medevac serve`.
Each server has a Doctor-style alarm registered by its owner's token; a consumer
process records the webhooks. After each fault the test puts the cloud back as it
was (releasing force-down is the recovery's job, not the inspector's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from medevac.cloud import DataPlaneStatus
from medevac.lab.client import project_tokens
from medevac.lab.consumer import doctor_alarm
from tests.conftest import ConsumerProcess, wait_for
from tests.lab.conftest import (
    Controller,
    RunningLab,
    as_json,
    medevac,
    start_lab,
)

HOST_STATUS_MV = ("--os-compute-api-version", "2.16")
STATE_WITHIN = 15.0


@pytest.fixture(scope="module")
def ilab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("inspector-lab"), hosts=6, servers_per_host=2)


@pytest.fixture(scope="module")
def ctl(ilab: RunningLab, hooks: ConsumerProcess) -> Iterator[Controller]:
    controller = Controller.start(
        ilab,
        # Faults follow each other here; only the guard test means to trip the guard.
        MEDEVAC_INSPECTOR__GUARD_WINDOW="2",
        MEDEVAC_INSPECTOR__GUARD_HOLD="5",
        # State correction only: recovery would fence the hosts these tests heal.
        MEDEVAC_RECOVERY__ENABLED="false",
    )
    try:
        register_alarms(ilab, controller, hooks)
        yield controller
    finally:
        if controller.proc.poll() is None:
            controller.stop()


def register_alarms(lab: RunningLab, ctl: Controller, hooks: ConsumerProcess) -> None:
    """One Doctor alarm per server by its owner; one operator alarm on guard holds."""
    tokens = project_tokens(lab.info["controller_config"])
    for s in lab.status()["servers"]:
        body = doctor_alarm(s["id"], s["name"], hooks.url + "/failure")
        r = httpx.post(
            ctl.url + "/v2/alarms", json=body, headers={"X-Auth-Token": tokens[s["project_id"]]}
        )
        assert r.status_code == 201, r.text
    guard = {
        "name": "zone-held",
        "severity": "critical",
        "repeat_actions": True,
        "alarm_actions": [hooks.url + "/guard"],
        "event_rule": {"event_type": "medevac.guard.hold"},
    }
    r = httpx.post(ctl.url + "/v2/alarms", json=guard, headers={"X-Auth-Token": ctl.token})
    assert r.status_code == 201, r.text


def incident(ctl: Controller, host: str, after: float) -> dict[str, Any] | None:
    for inc in ctl.get(f"/v1/incidents?host={host}")["incidents"]:
        if inc["opened_at"] >= after:
            return dict(inc)
    return None


def verdict_kinds(ctl: Controller, host: str, after: float) -> set[str]:
    inc = incident(ctl, host, after)
    return {v["kind"] for v in inc["verdicts"]} if inc else set()


def wait_incident_state(
    ctl: Controller, host: str, after: float, states: set[str]
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        inc = incident(ctl, host, after)
        return inc if inc is not None and inc["state"] in states else None

    return wait_for(f"{host}'s incident in {states}", done, STATE_WITHIN)


def hooks_for(
    hooks: ConsumerProcess, server_ids: set[str], path: str = "/failure"
) -> list[dict[str, Any]]:
    return [
        r
        for r in hooks.received()
        if r["path"] == path and r["traits"].get("instance_id") in server_ids
    ]


def put_back(lab: RunningLab, host: str) -> None:
    """Undo what the inspector did, as an operator (or the recovery) would."""

    async def undo() -> None:
        await lab.driver.set_forced_down(host, False)
        for s in await lab.driver.list_host_servers(host):
            if s.vm_state == "error":
                await lab.driver.reset_state(s.id, "active")
        for p in await lab.driver.list_host_ports(host):
            if p.data_plane_status is DataPlaneStatus.DOWN:
                await lab.driver.set_data_plane_status(p.id, DataPlaneStatus.ACTIVE)

    lab.run(undo())


def assert_cloud_knows_host_is_down(
    lab: RunningLab, host: str, servers: list[dict[str, Any]]
) -> None:
    """Read back through the real `openstack` CLI, as an operator would."""
    services = as_json(lab, "--os-compute-api-version", "2.53", "compute", "service", "list")
    svc = next(s for s in services if s["Host"] == host and s["Binary"] == "nova-compute")
    assert svc["State"] == "down", svc
    for s in servers:
        shown = as_json(lab, *HOST_STATUS_MV, "server", "show", s["id"])
        assert shown["host_status"] == "DOWN", shown
        assert shown["status"] == "ERROR", shown
    for port in (p for p in lab.status()["ports"] if p["host"] == host):
        shown = as_json(lab, "port", "show", port["id"])
        assert shown["data_plane_status"] == "DOWN", shown


@pytest.mark.parametrize(
    ("fault", "host", "verdicts"),
    [
        ("host-crash", "host1", {"HOST_UNREACHABLE"}),
        ("power-loss", "host2", {"HOST_DOWN"}),
        ("mgmt-partition", "host3", {"HOST_UNREACHABLE"}),
    ],
)
def test_lost_host_state_is_corrected_and_owners_alerted(
    ilab: RunningLab,
    ctl: Controller,
    hooks: ConsumerProcess,
    fault: str,
    host: str,
    verdicts: set[str],
) -> None:
    servers = ilab.servers_on(host)
    ids = {s["id"] for s in servers}
    t0 = time.time()
    ilab.client.inject(fault, host)
    try:
        inc = wait_incident_state(ctl, host, t0, {"CORRECTED"})
        # A slow BMC read makes the first verdict HOST_UNREACHABLE; "power off"
        # upgrades it to HOST_DOWN when it comes, into the same incident.
        wait_for(
            f"a {verdicts} verdict in the incident",
            lambda: verdict_kinds(ctl, host, t0) & verdicts,
            STATE_WITHIN,
        )
        assert all(a["ok"] for a in inc["actions"]), inc["actions"]
        got = wait_for(
            "a webhook per server", lambda: len(hooks_for(hooks, ids)) >= len(ids) or None, 10
        )
        assert got
        for hook in hooks_for(hooks, ids):
            assert hook["current"] == "alarm"
            assert hook["event_type"] == "compute.instance.update"
            assert hook["traits"]["host_status"] == "DOWN"
        assert_cloud_knows_host_is_down(ilab, host, servers)
        kinds = {a["kind"] for a in inc["actions"]}
        assert kinds == {"force-down", "reset-state", "port-status"}
    finally:
        ilab.client.heal(fault, host)
    ctl.wait_verdict("HOST_UP", host, 0)

    def ports_back() -> bool:
        ports = [p for p in ilab.status()["ports"] if p["host"] == host]
        return all(p["data_plane_status"] == "ACTIVE" for p in ports)

    wait_for("the host's ports restored", ports_back, STATE_WITHIN)
    closed = wait_incident_state(ctl, host, t0, {"CLOSED"})
    assert len(closed["verdicts"]) >= 2
    put_back(ilab, host)


def test_link_down_downs_only_that_physnets_ports(
    ilab: RunningLab, ctl: Controller, tmp_path: Path
) -> None:
    host, physnet = "host4", "physnet2"
    t0 = time.time()
    before = {p["id"]: p for p in ilab.status()["ports"]}
    ilab.client.inject("link-down", host, physnet)
    try:
        inc = wait_incident_state(ctl, host, t0, {"CORRECTED"})
        assert {a["kind"] for a in inc["actions"]} == {"port-status"}
        ports = {p["id"]: p for p in ilab.status()["ports"]}
        hit = {pid for pid, p in ports.items() if p["data_plane_status"] == "DOWN"}
        expected = {
            pid for pid, p in before.items() if p["host"] == host and p["physnet"] == physnet
        }
        assert expected and hit == expected
        svc = as_json(ilab, "--os-compute-api-version", "2.53", "compute", "service", "list")
        assert next(s for s in svc if s["Host"] == host)["State"] == "up"
        assert all(s["status"] == "ACTIVE" for s in ilab.servers_on(host))
        # The operator's view: the CLI lists the incident and shows its actions.
        auth = ("--url", ctl.url, "--token", ctl.token)
        listed = json.loads(medevac("incidents", "--json", "--host", host, *auth).stdout)
        assert inc["id"] in {i["id"] for i in listed["incidents"]}
        shown = medevac("incidents", inc["id"], *auth).stdout
        assert "port-status" in shown and "LINK_DOWN" in shown
        # Its profile, found by the id's first characters, as JSON, text and a chart.
        png = tmp_path / "profile.png"
        prof = json.loads(medevac("profile", inc["id"][:8], "--json", *auth).stdout)
        assert prof["incident_id"] == inc["id"] and prof["host"] == host
        marks = {c["name"] for c in prof["checkpoints"] if c["at"] is not None}
        assert {"T01", "V", "T02", "T05", "T06"} <= marks  # ports only: no T03, T04
        assert not {"T03", "T04"} & marks and prof["violations"] == []
        text = medevac("profile", inc["id"][:8], "--png", str(png), *auth).stdout
        assert "fault to cloud state corrected" in text and "percentage" in text
        assert png.read_bytes()[:4] == b"\x89PNG"
    finally:
        ilab.client.heal("link-down", host, physnet)

    def restored() -> bool:
        return all(
            p["data_plane_status"] in ("ACTIVE", None)
            for p in ilab.status()["ports"]
            if p["host"] == host
        )

    wait_for("ports back", restored, STATE_WITHIN)
    wait_incident_state(ctl, host, t0, {"CLOSED"})


def test_no_alarm_lost_to_a_consumer_outage_or_a_controller_kill(
    ilab: RunningLab, ctl: Controller, hooks: ConsumerProcess
) -> None:
    """A consumer down while the controller tries and retries its alarms, and still
    down across a SIGKILL of the controller, gets every alarm back once up: the
    successor owes them."""
    host = "host5"
    servers = ilab.servers_on(host)
    ids = {s["id"] for s in servers}
    hooks.down()
    refused_before = hooks.state()["refused"]
    t0 = time.time()
    ilab.client.inject("power-loss", host)
    try:
        wait_incident_state(ctl, host, t0, {"CORRECTED"})

        def refused_since(count: int, at_least: int) -> int | None:
            refused: int = hooks.state()["refused"]
            return refused if refused >= count + at_least else None

        # Each alarm tried, then retried, by this controller...
        wait_for(
            "each alarm refused twice", lambda: refused_since(refused_before, 2 * len(ids)), 60
        )
        ctl.kill()
        killed_at = hooks.state()["refused"]
        ctl.restart()  # ...then retried by its successor, which owes them.
        wait_for("the successor's retries", lambda: refused_since(killed_at, len(ids)), 60)
        assert hooks_for(hooks, ids) == []
        hooks.up()
        got = wait_for(
            "every owed webhook", lambda: len(hooks_for(hooks, ids)) >= len(ids) or None, 20
        )
        assert got
        assert sorted(h["traits"]["instance_id"] for h in hooks_for(hooks, ids)) == sorted(ids)
    finally:
        hooks.up()
        ilab.client.heal("power-loss", host)
    ctl.wait_verdict("HOST_UP", host, 0)
    put_back(ilab, host)


def test_most_of_a_zone_lost_gives_no_action_and_one_critical_event(
    ilab: RunningLab, ctl: Controller, hooks: ConsumerProcess
) -> None:
    victims = ["host4", "host5", "host6"]
    before = len([r for r in hooks.received() if r["path"] == "/guard"])
    t0 = time.time()
    ilab.client.inject("mgmt-partition", ",".join(victims))
    try:
        wait_for(
            "the guard's critical event",
            lambda: len([r for r in hooks.received() if r["path"] == "/guard"]) > before,
            STATE_WITHIN,
        )
        time.sleep(2)  # anything that would act has had its chance
        for host in victims:
            inc = incident(ctl, host, t0)
            assert inc is None or (inc["actions"] == [] and inc["state"] in ("OPEN", "HELD"))
        guard = [r for r in hooks.received() if r["path"] == "/guard"][before:]
        assert len(guard) == 1
        services = as_json(
            ilab, "--os-compute-api-version", "2.53", "compute", "service", "list", "--long"
        )
        assert [s["Forced Down"] for s in services if s["Host"] in victims] == [False] * 3
    finally:
        ilab.client.heal("mgmt-partition", ",".join(victims))

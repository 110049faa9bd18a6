"""Recovery against the lab: fenced through real IPMI, evacuated through real Nova,
durable across a SIGKILL, and never a server on two hosts.

Its own lab of 14 hosts x 3 servers (each test fails different hosts; host10, host13
and the hosts not failed yet are the destinations; host14's BMC speaks Redfish, the
others' IPMI) and a real `medevac serve` whose host groups put host11 at level 1,
host12 at level 3 and send host9's servers only to the reserved host13; every other
host is at the default level 2.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from medevac.lab.client import TwoHostWatch
from tests.conftest import wait_for
from tests.lab.conftest import (
    Controller,
    RunningLab,
    as_json,
    medevac,
    ok,
    openstack,
    start_lab,
)

ENDED = {"COMPLETED", "PARTIAL", "FAILED", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}
STATE_WITHIN = 15.0
GROUPS = [
    {"name": "unfenced", "hosts": ["host11"], "level": 1},
    {"name": "nova-decides", "hosts": ["host12"], "level": 3},
    {
        "name": "reserved",
        "hosts": ["host9"],
        "recovery_method": "reserved_host",
        "reserved_hosts": ["host13"],
    },
    # One evacuation at a time, every server: the order of the priorities shows.
    {"name": "ordered", "hosts": ["host14"], "evacuate_all": True, "concurrency": 1},
    {"name": "rest", "hosts": ["*"]},
]


@pytest.fixture(scope="module")
def rlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(
        tmp_path_factory.mktemp("recovery-lab"), hosts=14, servers_per_host=3, redfish="host14"
    )


@pytest.fixture(scope="module")
def ctl(rlab: RunningLab) -> Iterator[Controller]:
    controller = Controller.start(
        rlab,
        MEDEVAC_INSPECTOR__GUARD_WINDOW="2",  # hosts failed by earlier tests stay lost
        MEDEVAC_RECOVERY__CHECK_INTERVAL="0.25",
        MEDEVAC_RECOVERY__CHECK_MAX_COUNT="6",
        MEDEVAC_RECOVERY__GROUPS=json.dumps(GROUPS),
        MEDEVAC_RECOVERY__RESTART_COMPUTE="true",
    )
    try:
        yield controller
    finally:
        if controller.proc.poll() is None:
            controller.stop()


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
    status = lab.status()
    now = {s["id"]: s for s in status["servers"]}
    for s in before:
        moved = now[s["id"]]
        assert moved["host"] != host and moved["status"] == "ACTIVE", moved
    # Set DOWN when the host was lost, back up once each server runs elsewhere.
    moved_ports = [p for p in status["ports"] if p["device_id"] in {s["id"] for s in before}]
    assert moved_ports and all(p["data_plane_status"] == "ACTIVE" for p in moved_ports), moved_ports


def test_host_crash_is_fenced_then_its_ha_servers_evacuated(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host1"
    ha = ha_servers(rlab, host)
    others = {s["id"] for s in rlab.servers_on(host)} - {s["id"] for s in ha}
    assert ha, "the lab gives host1 an HA server"
    t0 = time.time()
    with TwoHostWatch(rlab.client) as watch:
        rlab.client.inject("host-crash", host)
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
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
    lifecycle = lambda: ctl.host(host)["lifecycle"]["state"]  # noqa: E731
    wait_for(f"{host}'s lifecycle to say RECOVERED", lambda: lifecycle() == "RECOVERED", 10)
    audit = ctl.get(f"/v1/audit?subject={host}&limit=500")["events"]
    moves = [e["detail"]["to"] for e in reversed(audit) if e["kind"] == "host.state"]
    assert moves == ["LOST", "FENCING", "FENCED", "RECOVERING", "RECOVERED"], moves


def test_a_fenced_host_that_returns_stays_down_until_released(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host1"  # fenced by the test above
    evacuated = {e["server_id"] for e in ctl.get(f"/v1/history?host={host}")["evacuations"]}
    assert evacuated
    on = rlab.ipmitool(host, "chassis", "power", "on")
    assert on.returncode == 0, on.stderr
    wait_for(f"{host} heard from again", lambda: ctl.host(host)["state"] == "UP", 60)
    inc = ctl.get(f"/v1/incidents?host={host}")["incidents"][0]
    assert inc["awaiting_release"] and inc["state"] != "CLOSED"
    time.sleep(2)  # policy is not auto_release: nothing may bring it back by itself
    svc = rlab.host(host)["nova"]
    assert svc["forced_down"] and svc["status"] == "disabled", svc
    auth = ("--url", ctl.url, "--token", ctl.token)

    def released() -> bool:
        # Nova refuses while the host's nova-compute has not cleaned up the evacuated
        # instances; the command says so and is simply tried again.
        return medevac("host", "release", host, *auth, check=False).returncode == 0

    wait_for(f"{host} released", released, 90, 1.0)
    svc = rlab.host(host)["nova"]
    assert not svc["forced_down"] and svc["status"] == "enabled", svc

    def clean() -> bool:
        running = rlab.client.running()
        return not any(host in running.get(sid, []) for sid in evacuated)

    wait_for("no evacuated server left running on the returned host", clean, 30)
    rlab.no_server_runs_twice()
    closed = ctl.get(f"/v1/incidents/{inc['id']}")
    assert closed["state"] == "CLOSED" and not closed["awaiting_release"]
    assert ctl.host(host)["lifecycle"]["state"] == "UP"


def test_partitioned_host_is_fenced_before_anything_runs_elsewhere(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host2"
    ha = ha_servers(rlab, host)
    t0 = time.time()
    with TwoHostWatch(rlab.client) as watch:
        rlab.client.inject("mgmt-partition", host)  # alive, guests running, unreachable
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
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


def evacuation_rows(ctl: Controller, host: str) -> list[dict[str, Any]]:
    return list(ctl.get(f"/v1/history?host={host}&limit=1000")["evacuations"])


# Points of a recovery at which the controller is killed, in the order they come.
KILL_POINTS: list[tuple[str, Any]] = [
    ("incident open", lambda inc, rec: inc is not None),
    ("recovery started", lambda inc, rec: rec is not None),
    ("fencing", lambda inc, rec: rec is not None and rec["state"] != "STARTED"),
    ("evacuating", lambda inc, rec: rec is not None and rec["state"] == "EVACUATING"),
    ("an evacuation requested", lambda inc, rec: rec is not None and rec["evacuations"]),
    (
        "a server recovered",
        lambda inc, rec: (
            rec is not None and any(e["result"] == "recovered" for e in rec["evacuations"])
        ),
    ),
]


def at_point(ctl: Controller, host: str, t0: float, reached: Any) -> bool:
    incs = ctl.get(f"/v1/incidents?host={host}")["incidents"]
    inc = next((i for i in incs if i["opened_at"] >= t0), None)
    rec = recovery_of(ctl, host, t0)
    if rec is not None and rec["state"] in ENDED:
        return True  # ended before this point: nothing left to cut
    return bool(reached(inc, rec))


def test_sigkill_at_every_point_of_recoveries_recovers_each_server_exactly_once(
    rlab: RunningLab, ctl: Controller
) -> None:
    kills: list[tuple[str, str]] = []
    for host in ("host4", "host5", "host6"):  # each kill point three times
        ha = ha_servers(rlab, host)
        t0 = time.time()
        with TwoHostWatch(rlab.client) as watch:
            rlab.client.inject("host-crash", host)
            for name, reached in KILL_POINTS:
                wait_for(f"{host}: {name}", partial(at_point, ctl, host, t0, reached), 60, 0.02)
                rec = recovery_of(ctl, host, t0)
                if rec is not None and rec["state"] in ENDED:
                    break
                ctl.kill()
                kills.append((host, name))
                ctl.restart()
            rec = wait_recovery(ctl, host, t0)
        assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
        assert_recovered(rlab, host, ha)
        rows = evacuation_rows(ctl, host)
        assert sorted(r["server_id"] for r in rows) == sorted(s["id"] for s in ha), rows
        assert all(r["result"] in ("recovered", "already-moved") for r in rows)
        assert watch.twice == [], f"{host}: servers ran on two hosts: {watch.twice[:3]}"
        assert len(ctl.get(f"/v1/recoveries?host={host}")["recoveries"]) == 1
    assert len(kills) >= 12, f"only {len(kills)} kill points reached: {kills}"


def test_three_sources_reporting_ten_times_give_one_incident_and_one_recovery(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host9"
    t0 = time.time()
    rlab.client.inject("host-crash", host)
    wait_for("the recovery", lambda: recovery_of(ctl, host, t0), 30, 0.05)
    headers = {"X-Auth-Token": ctl.token}
    for i in range(10):
        doctor = [
            {
                "time": "2026-01-01T00:00:00",
                "type": "compute.host.down",
                "details": {"hostname": host, "status": "down", "monitor_event_id": f"d{i}"},
            }
        ]
        r = httpx.put(ctl.url + "/events", json=doctor, headers=headers, timeout=10)
        assert r.status_code < 300, r.text
        alert = {
            "version": "4",
            "status": "firing",
            "receiver": "medevac",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "NodeDown", "instance": f"{host}:9100"},
                    "startsAt": f"2026-01-01T00:00:{i:02d}Z",
                    "fingerprint": f"f{i}",
                }
            ],
        }
        r = httpx.post(ctl.url + "/v1/alertmanager", json=alert, headers=headers, timeout=10)
        assert r.status_code < 300, r.text
    rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED"
    incidents = [
        i for i in ctl.get(f"/v1/incidents?host={host}")["incidents"] if i["opened_at"] >= t0
    ]
    assert len(incidents) == 1
    assert len(ctl.get(f"/v1/recoveries?host={host}")["recoveries"]) == 1


def test_a_dead_server_is_restarted_where_it_is(rlab: RunningLab, ctl: Controller) -> None:
    host = "host10"
    server = next(s for s in ha_servers(rlab, host) if s["status"] == "ACTIVE")
    t0 = time.time()
    rlab.client.inject("server-crash", server["id"])
    try:

        def restarted() -> dict[str, Any] | None:
            for r in ctl.get(f"/v1/recoveries?host={host}")["recoveries"]:
                if r["started_at"] >= t0 and r["id"].startswith("restart-"):
                    return r if r["state"] in ("COMPLETED", "FAILED") else None
            return None

        rec = wait_for("the restart", restarted, 60, 0.2)
        assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
        now = next(s for s in rlab.status()["servers"] if s["id"] == server["id"])
        assert now["host"] == host and now["status"] == "ACTIVE", now
    finally:
        rlab.client.heal("server-crash", server["id"])


def test_dead_nova_compute_is_disabled_then_restarted_by_the_agent_and_nothing_moves(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host10"
    t0 = time.time()
    rlab.client.inject("compute-process-down", host)
    # Nobody heals the fault: the controller asks host10's agent to restart nova-compute.
    rec = wait_recovery(ctl, host, t0, within=60)
    assert rec["id"].startswith("compute-") and rec["state"] == "COMPLETED", rec
    assert rec["level"] == 0 and rec["detail"]["attempts"] == 1
    # The agent saw the process back at once; the lab's Nova catches up a moment later.
    assert "compute-process-down" not in rlab.host(host)["faults"]
    wait_for("nova-compute running", lambda: rlab.host(host)["compute_process"] == "running", 10)
    wait_for(
        "the service enabled again",
        lambda: rlab.host(host)["nova"]["status"] == "enabled",
        STATE_WITHIN,
    )
    assert not rlab.host(host)["nova"]["forced_down"]
    incident = ctl.get(f"/v1/incidents?host={host}&limit=1")["incidents"][0]
    service = [(a["value"], a["ok"]) for a in incident["actions"] if a["kind"] == "service-status"]
    assert service == [("disabled", True), ("enabled", True)]
    assert ctl.get(f"/v1/history?host={host}")["evacuations"] == []


def test_level_1_evacuates_without_fencing_and_says_so(rlab: RunningLab, ctl: Controller) -> None:
    host = "host11"
    ha = ha_servers(rlab, host)
    t0 = time.time()
    rlab.client.inject("power-loss", host)  # level 1 is for hosts known dead
    rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED" and rec["level"] == 1, rec
    assert "fencing" not in rec["detail"]
    assert_recovered(rlab, host, ha)
    audit = [e["kind"] for e in ctl.get(f"/v1/audit?subject={host}&limit=200")["events"]]
    assert "recovery.fencing" not in audit


def test_level_3_fences_only_a_host_not_known_off(rlab: RunningLab, ctl: Controller) -> None:
    host = "host12"
    ha = ha_servers(rlab, host)
    t0 = time.time()
    rlab.client.inject("power-loss", host)
    rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED" and rec["level"] == 3, rec
    # HOST_DOWN (the BMC said off in time): no fencing. HOST_UNREACHABLE (the BMC
    # was slower than the verdict): fenced first, as at every level but 1.
    if rec["detail"]["verdict"] == "HOST_DOWN":
        assert "fencing" not in rec["detail"]
    else:
        assert rec["detail"]["fencing"]["confirmed"]
    assert_recovered(rlab, host, ha)


def test_reserved_host_method_sends_servers_only_to_the_reserved_host(
    rlab: RunningLab, ctl: Controller
) -> None:
    rec = recovery_of(ctl, "host9", 0)  # failed by the three-sources test above
    assert rec is not None and rec["state"] == "COMPLETED"
    assert rec["evacuations"] and {e["to_host"] for e in rec["evacuations"]} == {"host13"}


def test_a_redfish_bmc_fences_and_servers_go_in_priority_order(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host14"
    assert rlab.host(host)["bmc"]["protocol"] == "redfish"
    servers = rlab.servers_on(host)  # its own three, and any evacuated here before
    own = sorted(
        (s for s in servers if s["name"].startswith(f"vm-{host}-")), key=lambda s: s["name"]
    )
    priorities = dict(zip([s["id"] for s in own], (1, 30, 20), strict=True))
    for server_id, priority in priorities.items():  # as an owner would, with the real CLI
        ok(
            openstack(
                rlab, "server", "set", "--property", f"medevac:priority={priority}", server_id
            )
        )
    t0 = time.time()
    with TwoHostWatch(rlab.client) as watch:
        rlab.client.inject("mgmt-partition", host)  # alive: only fencing makes it safe
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
    assert rec["detail"]["fencing"]["confirmed"]
    assert rlab.host(host)["bmc"]["power"] == "off"  # ForceOff through Redfish
    evacuations = sorted(rec["evacuations"], key=lambda e: e["started_at"])
    assert rec["detail"]["fenced_at"] <= evacuations[0]["started_at"]
    order = [priorities.get(e["server_id"], 0) for e in evacuations]  # unset: 0
    assert order == [30, 20, 1] + [0] * (len(servers) - 3), order
    assert len(evacuations) == len(servers)  # evacuate_all: every server moves
    assert all(e["ended_at"] <= n["started_at"] for e, n in itertools.pairwise(evacuations))
    assert watch.twice == [] and watch.samples > 10
    assert_recovered(rlab, host, servers)


NOVA_MV = ("--os-compute-api-version", "2.74")  # 2.53 service ids, 2.74 boot on a host


def put_back_by_hand(rlab: RunningLab, host: str) -> None:
    """`openstack compute service set --up`, then `--enable`, as operators do; Nova
    refuses the first while the returned host has not cleaned up its evacuated servers.
    (In one command Nova enables first, while the service is still forced down, and
    leaves its placement trait COMPUTE_STATUS_DISABLED until nova-compute's next
    periodic update: nothing could be booted on it until then.)"""
    service = (*NOVA_MV, "compute", "service", "set")

    def up() -> bool:
        return openstack(rlab, *service, "--up", host, "nova-compute").returncode == 0

    wait_for(f"Nova to accept {host} up", up, 90, 1.0)
    ok(openstack(rlab, *service, "--enable", host, "nova-compute"))


def boot_ha_servers(rlab: RunningLab, host: str, names: list[str]) -> list[dict[str, Any]]:
    """New HA servers on ``host``, booted by an owner with the real CLI. Right after a
    release Nova's scheduler may not list the host yet (its compute reports it on its
    next periodic update): a boot that found no valid host is deleted and tried again,
    as the lab's own boots do."""
    tenant = f"{rlab.info['cloud']}-tenant-a"
    create = (*NOVA_MV, "server", "create", "--image", "lab-image", "--flavor", "1")
    for name in names:

        def booted(name: str = name) -> bool:
            done = openstack(
                rlab,
                *create,
                *("--no-network", "--host", host, "--property", "HA_Enabled=True"),
                *("--wait", name),
                cloud=tenant,
            )
            if done.returncode == 0:
                return True
            found = as_json(rlab, "server", "list", "--all-projects", "--name", name)
            faults = [as_json(rlab, "server", "show", s["ID"]).get("fault") for s in found]
            assert all("No valid host" in str(f) for f in faults), faults
            for s in found:
                ok(openstack(rlab, "server", "delete", "--wait", s["ID"]))
            return False

        wait_for(f"{name} booted on {host}", booted, 120, 2.0)
    servers = [s for s in rlab.servers_on(host) if s["name"] in names]
    assert len(servers) == len(names) and all(s["status"] == "ACTIVE" for s in servers), servers
    return servers


def fail_and_recover(
    rlab: RunningLab, ctl: Controller, host: str, ha: list[dict[str, Any]]
) -> dict[str, Any]:
    """Crash ``host``: its recovery completes and ``ha`` run elsewhere, never twice."""
    t0 = time.time()
    with TwoHostWatch(rlab.client) as watch:
        rlab.client.inject("host-crash", host)
        rec = wait_recovery(ctl, host, t0)
    assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
    now = {s["id"]: s for s in rlab.status()["servers"]}
    for s in ha:
        assert now[s["id"]]["host"] != host and now[s["id"]]["status"] == "ACTIVE", now[s["id"]]
    assert watch.twice == [], f"servers ran on two hosts: {watch.twice[:3]}"
    return rec


def power_back(rlab: RunningLab, ctl: Controller, host: str) -> dict[str, Any]:
    """Power a fenced host on again; returns its incident, now awaiting release."""
    on = rlab.ipmitool(host, "chassis", "power", "on")
    assert on.returncode == 0, on.stderr
    wait_for(f"{host} heard from again", lambda: ctl.host(host)["state"] == "UP", 60)
    inc = ctl.get(f"/v1/incidents?host={host}&limit=1")["incidents"][0]
    assert inc["awaiting_release"] and inc["state"] != "CLOSED", inc
    return dict(inc)


def wait_released_in_cloud(ctl: Controller, host: str, incident_id: str) -> None:
    def closed() -> bool:
        inc = ctl.get(f"/v1/incidents/{incident_id}")
        return bool(inc["state"] == "CLOSED")

    wait_for(f"{host}'s incident to follow Nova", closed, STATE_WITHIN, 0.2)
    inc = ctl.get(f"/v1/incidents/{incident_id}")
    assert inc["closed_by"].startswith("released by the cloud"), inc["closed_by"]
    audit = ctl.get(f"/v1/audit?subject={host}&limit=500")["events"]
    seen = [e for e in audit if e["kind"] == "host.released_in_cloud"]
    assert [e["detail"]["incident_id"] for e in seen][:1] == [incident_id], seen


def test_a_host_put_back_by_hand_is_recovered_again_when_it_fails_again(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host7"
    first = fail_and_recover(rlab, ctl, host, ha_servers(rlab, host))
    inc = power_back(rlab, ctl, host)
    put_back_by_hand(rlab, host)
    wait_released_in_cloud(ctl, host, inc["id"])
    booted = boot_ha_servers(rlab, host, ["vm-host7-again-1", "vm-host7-again-2"])
    second = fail_and_recover(rlab, ctl, host, booted)
    assert second["id"] != first["id"]
    recoveries = ctl.get(f"/v1/recoveries?host={host}")["recoveries"]
    assert sorted(r["id"] for r in recoveries) == sorted([first["id"], second["id"]])
    moved = {r["server_id"] for r in evacuation_rows(ctl, host) if r["recovery_id"] == second["id"]}
    assert moved == {s["id"] for s in booted}


def test_a_restarted_controller_closes_a_stale_incident_and_recovers_its_host_later(
    rlab: RunningLab, ctl: Controller
) -> None:
    host = "host8"
    fail_and_recover(rlab, ctl, host, ha_servers(rlab, host))
    inc = power_back(rlab, ctl, host)
    ctl.stop()
    put_back_by_hand(rlab, host)  # while no controller runs
    ctl.restart()
    wait_released_in_cloud(ctl, host, inc["id"])
    wait_for(f"{host} watched again", lambda: ctl.host(host)["state"] == "UP", 30)
    booted = boot_ha_servers(rlab, host, ["vm-host8-again-1"])
    fail_and_recover(rlab, ctl, host, booted)
    assert len(ctl.get(f"/v1/recoveries?host={host}")["recoveries"]) == 2

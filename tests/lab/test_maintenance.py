"""Planned maintenance against the lab: owners told through their alarms and answering,
the compute service disabled (a member sees host_status MAINTENANCE), the HA servers
live-migrated through real Nova at the deadline (the controller killed and restarted
while it waits), each verified, never a server on two hosts; the end puts the host
back. A host lost under maintenance with servers on it is recovered as any failure;
an empty one is not.

Its own lab of 5 hosts x 3 servers (one in three without HA_Enabled, two projects)
and a real `medevac serve`; host3's group moves every server, the others only HA ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from medevac.lab.client import TwoHostWatch, project_tokens
from tests.conftest import ConsumerProcess, wait_for
from tests.lab.conftest import Controller, RunningLab, as_json, medevac, start_lab

GROUPS = [
    {"name": "all-move", "hosts": ["host3"], "maintenance_migrate_all": True},
    {"name": "rest", "hosts": ["*"]},
]
OVER = {"EMPTY", "READY", "PARTIAL", "INTERRUPTED"}


@pytest.fixture(scope="module")
def mlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    yield from start_lab(tmp_path_factory.mktemp("maintenance-lab"), hosts=5, servers_per_host=3)


@pytest.fixture(scope="module")
def ctl(mlab: RunningLab, hooks: ConsumerProcess) -> Iterator[Controller]:
    controller = Controller.start(
        mlab,
        MEDEVAC_INSPECTOR__GUARD_WINDOW="2",
        MEDEVAC_RECOVERY__CHECK_INTERVAL="0.25",
        MEDEVAC_RECOVERY__CHECK_MAX_COUNT="6",
        MEDEVAC_RECOVERY__GROUPS=json.dumps(GROUPS),
    )
    try:
        register_owner_alarms(mlab, controller, hooks)
        yield controller
    finally:
        if controller.proc.poll() is None:
            controller.stop()


def register_owner_alarms(lab: RunningLab, ctl: Controller, hooks: ConsumerProcess) -> None:
    """Each server's owner registers one alarm on its server's maintenance events."""
    tokens = project_tokens(lab.info["controller_config"])
    for s in lab.status()["servers"]:
        body = {
            "name": f"{s['name']}-maintenance",
            "type": "event",
            "repeat_actions": True,
            "alarm_actions": [f"{hooks.url}/maintenance"],
            "event_rule": {
                "event_type": "maintenance.*",
                "query": [{"field": "traits.instance_id", "op": "eq", "value": s["id"]}],
            },
        }
        r = httpx.post(
            ctl.url + "/v2/alarms", json=body, headers={"X-Auth-Token": tokens[s["project_id"]]}
        )
        assert r.status_code == 201, r.text


def cli(ctl: Controller, *args: str) -> Any:
    out = medevac(*args, "--json", "--url", ctl.url, "--token", ctl.token).stdout
    return json.loads(out)


def maintenance(ctl: Controller, host: str) -> dict[str, Any]:
    return dict(ctl.get(f"/v1/hosts/{host}/maintenance"))


def wait_over(ctl: Controller, host: str, within: float = 90) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        m = maintenance(ctl, host)
        return m if m["state"] in OVER else None

    return wait_for(f"{host}'s maintenance migrations to end", over, within, 0.2)


def events(hooks: ConsumerProcess, event_type: str, server_ids: set[str]) -> dict[str, Any]:
    """The webhooks of ``event_type`` received for these servers, by server."""
    return {
        r["traits"]["instance_id"]: r
        for r in hooks.received()
        if r["event_type"] == event_type and r["traits"].get("instance_id") in server_ids
    }


def wait_events(hooks: ConsumerProcess, event_type: str, server_ids: set[str]) -> dict[str, Any]:
    """Once one webhook of ``event_type`` came for each of these servers: them, by server."""

    def each() -> dict[str, Any] | None:
        got = events(hooks, event_type, server_ids)
        return got if len(got) == len(server_ids) else None

    return wait_for(f"{event_type} for each server", each, 15)


def ha(s: dict[str, Any]) -> bool:
    return bool(s["metadata"].get("HA_Enabled") == "True")


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_owners_told_answer_then_ha_servers_migrate_at_the_deadline_across_a_restart(
    mlab: RunningLab, ctl: Controller, hooks: ConsumerProcess
) -> None:
    host = "host1"
    servers = mlab.servers_on(host)
    ids = {s["id"] for s in servers}
    kept = next(s for s in servers if ha(s))  # its owner asks for it to stay
    moving = {s["id"] for s in servers if ha(s)} - {kept["id"]}
    plain = {s["id"] for s in servers if not ha(s)}
    assert moving and plain, "the lab gives host1 two HA servers and one without"

    started = cli(ctl, "host", "maintenance", "start", host, "--reason", "new disks",
                  "--deadline", soon(25))  # fmt: skip
    assert started["state"] == "SCHEDULED" and started["reason"] == "new disks"

    told = wait_events(hooks, "maintenance.scheduled", ids)
    for s in servers:
        traits = told[s["id"]]["traits"]
        assert traits["project_id"] == s["project_id"] and traits["host"] == host
        deadline = datetime.fromisoformat(traits["deadline"]).replace(tzinfo=UTC).timestamp()
        assert deadline == pytest.approx(started["deadline_at"], abs=1e-3)
        assert traits["planned"] == ("migrate" if ha(s) else "leave")
    # The service is disabled with the reason: a member sees MAINTENANCE (2.16).
    svc = mlab.run(mlab.driver.get_compute_service(host))
    assert svc.status == "disabled" and "new disks" in (svc.disabled_reason or ""), svc
    member_cloud = f"{mlab.info['cloud']}-{kept['project_id']}"
    shown = as_json(mlab, "--os-compute-api-version", "2.16", "server", "show", kept["id"],
                    cloud=member_cloud)  # fmt: skip
    assert shown["host_status"] == "MAINTENANCE", shown
    assert ctl.host(host)["lifecycle"]["state"] == "MAINTENANCE"
    assert ctl.host(host)["maintenance"]["id"] == started["id"]

    tokens = project_tokens(mlab.info["controller_config"])
    answer = httpx.post(
        f"{ctl.url}/v1/hosts/{host}/maintenance/answers",
        json={"server_id": kept["id"], "answer": "leave"},
        headers={"X-Auth-Token": tokens[kept["project_id"]]},
    )
    assert answer.status_code == 200 and answer.json()["answer"] == "leave", answer.text

    # Killed while it waits for the deadline: the restarted controller goes on.
    ctl.kill()
    ctl.restart()

    with TwoHostWatch(mlab.client) as watch:
        done = wait_over(ctl, host, 120)
    assert done["state"] == "READY", json.dumps(done, indent=1)
    by_id = {s["server_id"]: s for s in done["servers"]}
    # Not one owner answered for the others: the migrations waited for the deadline.
    assert all(by_id[sid]["started_at"] >= started["deadline_at"] for sid in moving)
    assert {sid for sid, s in by_id.items() if s["result"] == "migrated"} == moving
    assert {sid for sid, s in by_id.items() if s["result"] == "left"} == plain | {kept["id"]}
    assert done["detail"]["servers_left"] and set(done["detail"]["servers_left"]) == plain | {
        kept["id"]
    }
    now = {s["id"]: s for s in mlab.status()["servers"]}
    for sid in moving:  # verified: running on another host
        assert now[sid]["host"] not in (host, None) and now[sid]["status"] == "ACTIVE", now[sid]
        assert by_id[sid]["to_host"] == now[sid]["host"]
    assert all(now[sid]["host"] == host for sid in plain | {kept["id"]})
    assert watch.samples > 5 and watch.twice == []
    migrated = wait_events(hooks, "maintenance.instance.migrated", moving)
    assert all(e["traits"]["result"] == "migrated" for e in migrated.values())

    ended = cli(ctl, "host", "maintenance", "end", host)
    assert ended["state"] == "ENDED" and ended["service_enabled"]
    svc = mlab.host(host)["nova"]
    assert svc["status"] == "enabled", svc
    assert ctl.host(host)["lifecycle"]["state"] == "UP" and ctl.host(host)["maintenance"] is None
    wait_events(hooks, "maintenance.complete", ids)
    audit = ctl.get(f"/v1/audit?subject={host}&limit=500")["events"]
    kinds = [e["kind"] for e in reversed(audit)]
    for kind in ("maintenance.started", "maintenance.answer", "maintenance.ready",
                 "maintenance.ended"):  # fmt: skip
        assert kind in kinds, kinds
    moves = [e["detail"]["to"] for e in reversed(audit) if e["kind"] == "host.state"]
    assert moves == ["MAINTENANCE", "UP"], moves


def test_an_empty_host_under_maintenance_powered_off_is_no_failure(
    mlab: RunningLab, ctl: Controller, hooks: ConsumerProcess
) -> None:
    host = "host3"  # its group moves every server
    ids = {s["id"] for s in mlab.servers_on(host)}
    cli(ctl, "host", "maintenance", "start", host, "--reason", "firmware")
    done = wait_over(ctl, host)
    assert done["state"] == "EMPTY", json.dumps(done, indent=1)
    assert mlab.servers_on(host) == []
    wait_events(hooks, "maintenance.instance.migrated", ids)

    t0 = time.time()
    after = len(ctl.verdicts())
    mlab.client.inject("power-loss", host)
    ctl.wait_verdict("HOST_DOWN", host, after)

    def said_silent() -> bool:
        audit = ctl.get(f"/v1/audit?subject={host}&limit=100")["events"]
        return any(e["kind"] == "maintenance.host.silent" for e in audit)

    wait_for("the audit to say the loss is no failure", said_silent, 10)
    incidents = ctl.get(f"/v1/incidents?host={host}")["incidents"]
    assert [i for i in incidents if i["opened_at"] >= t0] == []
    assert [r for r in ctl.get(f"/v1/recoveries?host={host}")["recoveries"]] == []
    assert ctl.host(host)["lifecycle"]["state"] == "MAINTENANCE"
    assert not mlab.host(host)["nova"]["forced_down"]

    mlab.client.heal("power-loss", host)
    wait_for(f"{host} heard again", lambda: ctl.host(host)["state"] == "UP", 30)
    ended = cli(ctl, "host", "maintenance", "end", host)
    assert ended["service_enabled"] and mlab.host(host)["nova"]["status"] == "enabled"


def test_a_host_crashing_under_maintenance_with_servers_on_it_is_recovered(
    mlab: RunningLab, ctl: Controller
) -> None:
    host = "host2"
    on_host = [s for s in mlab.servers_on(host) if ha(s)]
    assert on_host
    cli(ctl, "host", "maintenance", "start", host, "--deadline", soon(600))
    t0 = time.time()
    mlab.client.inject("host-crash", host)

    def recovered() -> dict[str, Any] | None:
        for r in ctl.get(f"/v1/recoveries?host={host}")["recoveries"]:
            if r["started_at"] >= t0 and r["ended_at"] is not None:
                return dict(ctl.get(f"/v1/recoveries/{r['id']}"))
        return None

    rec = wait_for(f"{host}'s recovery", recovered, 90, 0.2)
    assert rec["state"] == "COMPLETED", json.dumps(rec["detail"], indent=1)
    assert sorted(e["server_id"] for e in rec["evacuations"]) == sorted(s["id"] for s in on_host)
    assert ctl.host(host)["lifecycle"]["state"] in ("RECOVERED", "AWAITING_RELEASE")
    assert maintenance(ctl, host)["state"] == "SCHEDULED"  # the deadline is still to come

    # Its end leaves the service to the release: the host was lost.
    ended = cli(ctl, "host", "maintenance", "end", host)
    assert ended["state"] == "ENDED" and not ended["service_enabled"]
    svc = mlab.host(host)["nova"]
    assert svc["forced_down"] and svc["status"] == "disabled", svc

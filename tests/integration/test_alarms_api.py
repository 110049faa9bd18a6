"""The Aodh v2 alarm API: Aodh's fields and answers, project scoping, bad input; what
goes through the store on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.config import Settings
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.records import AlarmStore, OutboxStore
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
MEMBER = {"X-Auth-Token": MEMBER_TOKEN}  # project p1
READER = {"X-Auth-Token": READER_TOKEN}


def doctor_alarm(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "vm1-failure",
        "type": "event",
        "enabled": True,
        "severity": "moderate",
        "repeat_actions": False,
        "alarm_actions": ["http://127.0.0.1:12346/failure"],
        "event_rule": {
            "event_type": "compute.instance.update",
            "query": [
                {"field": "traits.instance_id", "type": "", "op": "eq", "value": "vm1"},
                {"field": "traits.state", "type": "", "op": "eq", "value": "error"},
            ],
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    store = AlarmStore(db)
    notifier = Notifier(store, OutboxStore(db))
    with TestClient(
        create_app(settings, db, notifier=notifier), raise_server_exceptions=False
    ) as c:
        yield c


@pytest.mark.databases
def test_create_answers_like_aodh(client: TestClient) -> None:
    r = client.post("/v2/alarms", json=doctor_alarm(), headers=ADMIN)
    assert r.status_code == 201, r.text
    alarm = r.json()
    assert alarm["state"] == "insufficient data"
    assert alarm["type"] == "event" and alarm["severity"] == "moderate"
    assert alarm["event_rule"]["query"][0]["field"] == "traits.instance_id"
    got = client.get(f"/v2/alarms/{alarm['alarm_id']}", headers=ADMIN).json()
    assert got == alarm
    assert [a["alarm_id"] for a in client.get("/v2/alarms", headers=ADMIN).json()] == [
        alarm["alarm_id"]
    ]


@pytest.mark.databases
def test_alarms_survive_a_restart(settings: Settings, db: Database) -> None:
    store = AlarmStore(db)
    first = Notifier(store, OutboxStore(db))
    with TestClient(create_app(settings, db, notifier=first)) as c:
        alarm_id = c.post("/v2/alarms", json=doctor_alarm(), headers=ADMIN).json()["alarm_id"]
    second = Notifier(store, OutboxStore(db))
    with TestClient(create_app(settings, db, notifier=second)) as c:
        c.portal.call(second.load)  # as `medevac serve` does at start
        assert c.get(f"/v2/alarms/{alarm_id}", headers=ADMIN).json()["name"] == "vm1-failure"


@pytest.mark.databases
def test_state_get_put_and_history(client: TestClient) -> None:
    alarm_id = client.post("/v2/alarms", json=doctor_alarm(), headers=ADMIN).json()["alarm_id"]
    assert client.put(f"/v2/alarms/{alarm_id}/state", json="ok", headers=ADMIN).json() == "ok"
    assert client.get(f"/v2/alarms/{alarm_id}/state", headers=ADMIN).json() == "ok"
    r = client.put(f"/v2/alarms/{alarm_id}/state", json="sleepy", headers=ADMIN)
    assert r.status_code == 400 and "state" in r.json()["error_message"]["faultstring"]
    history = client.get(f"/v2/alarms/{alarm_id}/history", headers=ADMIN).json()
    assert [h["type"] for h in history] == ["state transition", "creation"]


@pytest.mark.databases
def test_replace_and_delete(client: TestClient) -> None:
    alarm_id = client.post("/v2/alarms", json=doctor_alarm(), headers=ADMIN).json()["alarm_id"]
    r = client.put(f"/v2/alarms/{alarm_id}", json=doctor_alarm(severity="critical"), headers=ADMIN)
    assert r.status_code == 200 and r.json()["severity"] == "critical"
    assert client.delete(f"/v2/alarms/{alarm_id}", headers=ADMIN).status_code == 204
    assert client.get(f"/v2/alarms/{alarm_id}", headers=ADMIN).status_code == 404


@pytest.mark.databases
def test_put_takes_back_the_alarm_it_read_but_no_unknown_field(client: TestClient) -> None:
    alarm = client.post("/v2/alarms", json=doctor_alarm(), headers=MEMBER).json()
    body = client.get(f"/v2/alarms/{alarm['alarm_id']}", headers=MEMBER).json()
    body.update(severity="critical", alarm_id="ignored", state_reason="ignored")
    body["evaluate_timestamp"] = None
    r = client.put(f"/v2/alarms/{alarm['alarm_id']}", json=body, headers=MEMBER)
    assert r.status_code == 200, r.text
    assert r.json()["alarm_id"] == alarm["alarm_id"] and r.json()["severity"] == "critical"
    assert r.json()["state_timestamp"] == alarm["state_timestamp"]
    r = client.put(f"/v2/alarms/{alarm['alarm_id']}", json={**body, "colour": 1}, headers=MEMBER)
    assert r.status_code == 400
    assert r.json()["error_message"]["faultstring"].startswith("colour")


@pytest.mark.databases
def test_member_sees_only_its_projects_alarms(client: TestClient) -> None:
    ops = client.post("/v2/alarms", json=doctor_alarm(), headers=ADMIN).json()
    mine = client.post("/v2/alarms", json=doctor_alarm(name="mine"), headers=MEMBER).json()
    assert mine["project_id"] == "p1"
    assert [a["name"] for a in client.get("/v2/alarms", headers=MEMBER).json()] == ["mine"]
    assert client.get(f"/v2/alarms/{ops['alarm_id']}", headers=MEMBER).status_code == 404
    assert client.delete(f"/v2/alarms/{ops['alarm_id']}", headers=MEMBER).status_code == 404
    r = client.post("/v2/alarms", json=doctor_alarm(project_id="p2"), headers=MEMBER)
    assert r.status_code == 403
    assert len(client.get("/v2/alarms", headers=READER).json()) == 2


def test_reader_cannot_change_anything(client: TestClient) -> None:
    assert client.post("/v2/alarms", json=doctor_alarm(), headers=READER).status_code == 403
    assert client.post("/v2/alarms", json=doctor_alarm()).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (doctor_alarm(colour="red"), "colour"),
        (doctor_alarm(type="threshold"), "type"),
        (doctor_alarm(alarm_actions=["ftp://x/y"]), "actions"),
        (doctor_alarm(alarm_actions=["http://127.0.0.1:8780/v2/alarms"]), "actions"),
        (
            doctor_alarm(event_rule={"query": [{"field": "traits.x", "op": "like", "value": 1}]}),
            "event_rule.query.0.op",
        ),
        (
            doctor_alarm(
                event_rule={
                    "query": [{"field": "traits.n", "op": "eq", "value": "x", "type": "integer"}]
                }
            ),
            "event_rule.query",
        ),
        ([1, 2], "(body)"),
    ],
)
def test_bad_alarms_get_400_naming_the_field(client: TestClient, body: Any, field: str) -> None:
    r = client.post("/v2/alarms", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error_message"]["faultstring"].startswith(field), r.json()
    assert r.json()["error_message"]["faultcode"] == "Client"
    assert client.get("/v2/alarms", headers=ADMIN).json() == []  # nothing half-created


def test_oversized_alarm_is_413(client: TestClient) -> None:
    r = client.post("/v2/alarms", json=doctor_alarm(description="x" * 5000), headers=ADMIN)
    assert r.status_code == 413
    assert "larger than" in r.json()["error_message"]["faultstring"]


def test_aodh_routes_answer_aodh_errors_and_medevacs_keep_the_envelope(
    client: TestClient,
) -> None:
    r = client.get("/v2/alarms/nope", headers=ADMIN)
    assert r.status_code == 404
    assert r.json() == {
        "error_message": {
            "faultcode": "Client",
            "faultstring": "Alarm nope not found",
            "debuginfo": None,
        }
    }
    assert client.get("/v2/alarms").json()["error_message"]["faultstring"].startswith("missing")
    assert client.get("/v2/nothing", headers=ADMIN).json()["error_message"]["faultcode"] == "Client"
    r = client.get("/v1/whoami")
    assert r.status_code == 401 and r.json()["error"]["code"] == 401

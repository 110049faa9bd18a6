"""Every route that changes something, found from the app's own routes (so a new one is
covered without editing this test): refused without a token, with a wrong one, with a
reader's and with another project's member's; and nothing changed by the attempts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from medevac.config import Settings
from medevac.storage import Database
from tests.api_world import OTHER_MEMBER_TOKEN, World, build_world
from tests.conftest import MEMBER_TOKEN, READER_TOKEN
from tests.integration.test_alarms_api import doctor_alarm

pytestmark = pytest.mark.databases

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Read-only routes that take a body (a query): any token may call them.
QUERIES = {"/v2/query/alarms", "/v2/query/alarms/history"}
CALLERS: dict[str, tuple[dict[str, str], set[int]]] = {
    "no token": ({}, {401}),
    "wrong token": ({"X-Auth-Token": "not-a-configured-token-42"}, {401}),
    "reader": ({"X-Auth-Token": READER_TOKEN}, {403}),
    "another project's member": ({"X-Auth-Token": OTHER_MEMBER_TOKEN}, {403, 404}),
}


@pytest.fixture
def world(settings: Settings, db: Database) -> Iterator[World]:
    yield build_world(settings, db)


def mutating_routes(world: World) -> list[tuple[str, str]]:
    found = [
        (method, route.path)
        for route in iter_route_contexts(world.app.routes)  # included routers' too
        if route.path is not None and route.path not in QUERIES
        for method in sorted((route.methods or set()) & MUTATING)
    ]
    assert len(found) >= 7, found  # alarms (4), events, alertmanager, release
    return found


def body_for(method: str, path: str) -> Any:
    if path.endswith("/state"):
        return "alarm"
    if path.startswith("/v2/alarms"):
        # Into the victim's project p1: another project's member may create in its own.
        return doctor_alarm(name="changed", severity="critical", project_id="p1")
    if path == "/events":
        return [
            {
                "time": "2026-01-01T00:00:00Z",
                "type": "compute.host.down",
                "details": {"hostname": "h1", "status": "down"},
            }
        ]
    if path.endswith("/maintenance/answers"):
        return {"server_id": "s1", "answer": "leave"}
    if path.endswith("/maintenance"):
        return {"reason": "changed", "deadline": None}
    if path == "/v1/alertmanager":
        return {"alerts": [{"status": "firing", "labels": {"instance": "h1:9100"}}]}
    return {}


def test_every_mutating_route_refuses_foreign_callers_and_changes_nothing(world: World) -> None:
    with TestClient(world.app, raise_server_exceptions=True) as client:
        member = {"X-Auth-Token": MEMBER_TOKEN}
        alarm = client.post("/v2/alarms", json=doctor_alarm(), headers=member)
        assert alarm.status_code == 201, alarm.text
        ids = {"alarm_id": alarm.json()["alarm_id"], "host": "h1"}
        before = world.state()
        tried = 0
        for method, template in mutating_routes(world):
            path = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), template)
            for who, (headers, refused) in CALLERS.items():
                owners = template.startswith("/v2/") or template.endswith("/maintenance/answers")
                if who == "another project's member" and not owners:
                    refused = {403}  # admin-only routes: a member is refused by role
                r = client.request(method, path, json=body_for(method, template), headers=headers)
                assert r.status_code in refused, (method, template, who, r.status_code, r.text)
                tried += 1
        assert world.state() == before
        assert tried == 4 * len(mutating_routes(world))
        # The comparison sees a change when one is allowed.
        client.put(f"/v2/alarms/{ids['alarm_id']}/state", json="alarm", headers=member)
        assert world.state() != before

"""What the API takes, the store can keep, on SQLite and on PostgreSQL: a value longer
than its column or holding a NUL character is refused with a 400 naming where, in each
prefix's error shape, before any write (PostgreSQL would refuse the write: a 500, or an
outbox chunk that never commits); the longest value allowed goes through."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.config import Settings
from medevac.notifier.events import INSTANCE_UPDATE, Event
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.models import NAME_LENGTH, URL_LENGTH
from medevac.storage.records import AlarmStore, OutboxStore
from tests.api_world import World, build_world
from tests.conftest import ADMIN_TOKEN, ConsumerProcess, wait_for
from tests.integration.test_alarms_api import doctor_alarm
from tests.serving import served

pytestmark = pytest.mark.databases

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


def fault(r: httpx.Response) -> str:
    """The message of an error answer, in either prefix's shape."""
    body = r.json()
    return str(
        body["error_message"]["faultstring"]
        if "error_message" in body
        else body["error"]["message"]
    )


def refused(r: httpx.Response, where: str) -> str:
    assert r.status_code == 400, (r.status_code, r.text)
    message = fault(r)
    assert message.startswith(where), message
    return message


@pytest.fixture
def world(settings: Settings, db: Database) -> Iterator[tuple[World, str]]:
    """Every router over the test's database, under a real uvicorn."""
    world = build_world(settings, db)
    with served(world.app) as url:
        yield world, url


def test_a_nul_character_anywhere_a_request_reaches_the_store_is_400_naming_where(
    world: tuple[World, str], caplog: pytest.LogCaptureFixture
) -> None:
    w, url = world
    caplog.set_level(logging.ERROR)
    nul = "\u0000"
    cases: list[tuple[str, str, Any, str]] = [
        ("GET", "/v1/audit?subject=h1%00", None, "query parameter 'subject'"),
        ("GET", "/v1/incidents?host=%00&state=OPEN", None, "query parameter 'host'"),
        ("GET", "/v1/incidents/i%00", None, "path"),
        ("GET", "/v1/recoveries?host=h%00", None, "query parameter 'host'"),
        ("GET", "/v1/recoveries/r%001", None, "path"),
        ("GET", "/v1/history?server=s%00", None, "query parameter 'server'"),
        ("GET", "/v2/alarms?q.field=name&q.value=a%00", None, "query parameter 'q.value'"),
        ("GET", "/v2/alarms/a%00/history", None, "path"),
        ("POST", "/v2/alarms", doctor_alarm(project_id=f"p{nul}"), "project_id"),
        ("POST", "/v2/alarms", doctor_alarm(name=f"vm1{nul}"), "name"),
        (
            "POST",
            "/v2/alarms",
            doctor_alarm(alarm_actions=[f"http://127.0.0.1:9/x{nul}"]),
            "alarm_actions.0",
        ),
        (
            "POST",
            "/v2/query/alarms/history",
            {"filter": f'{{"=": {{"alarm_id": "a{nul}"}}}}'},
            "filter",
        ),
        (
            "PUT",
            "/events",
            [
                {
                    "time": "2026-01-01T00:00:00Z",
                    "type": "compute.host.down",
                    "details": {"hostname": f"h1{nul}", "status": "down"},
                }
            ],
            "0.details.hostname",
        ),
        (
            "PUT",
            "/events",
            [
                {
                    "time": "2026-01-01T00:00:00Z",
                    "type": "compute.host.down",
                    "details": {"hostname": "h1", "status": "down", f"note{nul}": 1},
                }
            ],
            "0.details.note\\u0000",
        ),
    ]
    with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as c:
        before = w.state()
        for method, path, body, where in cases:
            r = c.request(method, path, json=body)
            message = refused(r, where)
            assert "NUL character" in message
            aodh = path.startswith("/v2/")
            assert ("error_message" in r.json()) == aodh, (path, r.json())
        assert w.state() == before  # nothing was written
        # The text "\u0000" (a backslash, then u0000) is no NUL: kept as sent.
        r = c.post("/v2/alarms", json=doctor_alarm(description="\\u0000 is not a NUL"))
        assert r.status_code == 201, r.text
        assert r.json()["description"] == "\\u0000 is not a NUL"
        stored = AlarmStore(w.db).all()
        assert [a.spec["description"] for a in stored] == ["\\u0000 is not a NUL"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_values_longer_than_their_columns_are_400_and_the_longest_allowed_are_stored(
    settings: Settings, db: Database, consumer: ConsumerProcess
) -> None:
    """An action URL past ``deliveries.url``, a project id past ``alarms.project_id``, an
    action's host and port past the audit subject: refused on create and on replace.
    At their columns' lengths exactly they are stored, and the alarm's webhook goes
    through the outbox (once a chunk that never committed on PostgreSQL)."""
    notifier = Notifier(AlarmStore(db), OutboxStore(db))
    roomy = settings.api.model_copy(update={"max_body_bytes": 4 * URL_LENGTH})
    app = create_app(settings.model_copy(update={"api": roomy}), db, notifier=notifier)
    base = consumer.url + "/failure/"
    longest = base + "x" * (URL_LENGTH - len(base))
    too_long = longest + "x"
    host = "h" * (NAME_LENGTH - len(":8080") + 1) + ".example"
    with TestClient(app, raise_server_exceptions=False) as c:
        c.portal.call(notifier.start)
        try:
            r = c.post("/v2/alarms", json=doctor_alarm(alarm_actions=[too_long]), headers=ADMIN)
            message = refused(r, "alarm_actions.0")
            assert f"at most {URL_LENGTH} characters" in message and "xxx" not in message
            assert r.json()["error_message"]["faultcode"] == "Client"
            r = c.post(
                "/v2/alarms", json=doctor_alarm(ok_actions=[longest, too_long]), headers=ADMIN
            )
            refused(r, "ok_actions.1")
            r = c.post(
                "/v2/alarms", json=doctor_alarm(project_id="p" * (NAME_LENGTH + 1)), headers=ADMIN
            )
            refused(r, "project_id")
            r = c.post(
                "/v2/alarms",
                json=doctor_alarm(alarm_actions=[f"http://{host}:8080/x"]),
                headers=ADMIN,
            )
            assert f"longer than {NAME_LENGTH}" in refused(r, "actions")
            assert c.get("/v2/alarms", headers=ADMIN).json() == []

            body = doctor_alarm(alarm_actions=[longest], project_id="p" * NAME_LENGTH)
            r = c.post("/v2/alarms", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
            alarm_id = r.json()["alarm_id"]
            r = c.put(
                f"/v2/alarms/{alarm_id}",
                json={**body, "alarm_actions": [too_long]},
                headers=ADMIN,
            )
            refused(r, "alarm_actions.0")
            traits = {"instance_id": "vm1", "state": "error", "project_id": "p" * NAME_LENGTH}
            c.portal.call(notifier.emit, [Event(INSTANCE_UPDATE, time.time(), traits)])
            wait_for("the webhook", consumer.received, 10)
        finally:
            c.portal.call(notifier.close)
    [got] = consumer.received()
    assert got["path"] == longest.removeprefix(consumer.url) and got["alarm_id"] == alarm_id
    assert notifier.outbox.counters["write_failed"] == 0
    [delivery] = OutboxStore(db).recent()
    assert (delivery.url, delivery.status) == (longest, "delivered")
    [stored] = AlarmStore(db).all()
    assert stored.project_id == "p" * NAME_LENGTH

"""What the API takes, the store can keep, on SQLite and on PostgreSQL: a value longer
than its column is refused with a 400 naming where, in each prefix's error shape,
before any write (PostgreSQL would refuse the write: a 500, or an outbox chunk that
never commits); the longest value allowed goes through."""

from __future__ import annotations

import time

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
from tests.conftest import ADMIN_TOKEN, ConsumerProcess, wait_for
from tests.integration.test_alarms_api import doctor_alarm

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

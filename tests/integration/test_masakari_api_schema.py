"""Generated requests (schemathesis, from the Masakari API's own OpenAPI document, served
behind a token at /instance-ha/openapi.json; valid and invalid ones) against every
Masakari route through the whole API, with an admin's, a reader's and a member's token:
no 5xx, and every answer's status, content type and body as the document says."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.config import Settings
from medevac.monitor.hosts import HostMonitor
from medevac.storage import Database
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN
from tests.monitor_fakes import KEY, PowerOn, Sink
from tests.schema_runs import every_operation

pytestmark = pytest.mark.databases  # bad input must never reach either database as a 500

EXAMPLES = 25  # per operation and token: about 1,300 requests over the 18 operations
HOSTS = ("h1", "h2", "h3")
DOCUMENT = "/instance-ha/openapi.json"


class Nova:
    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {h: {"state": "up"} for h in HOSTS}


def _app(settings: Settings, db: Database) -> FastAPI:
    api = settings.api.model_copy(update={"rate_limit": 0})
    monitor = HostMonitor(dict.fromkeys(HOSTS, "z"), KEY, Sink(), PowerOn(), Nova())
    return create_app(settings.model_copy(update={"api": api}), db, monitor=monitor)


def _seed(app: FastAPI) -> None:
    """A segment with a host and a notification, so that lists have something to show."""
    client = TestClient(app)
    admin = {"X-Auth-Token": ADMIN_TOKEN, "OpenStack-API-Version": "instance-ha 1.3"}
    segment = {"name": "seg1", "recovery_method": "auto", "service_type": "COMPUTE"}
    r = client.post("/instance-ha/v1/segments", json={"segment": segment}, headers=admin)
    assert r.status_code == 201, r.text
    uuid = r.json()["segment"]["uuid"]
    host = {"name": "h1", "type": "COMPUTE", "control_attributes": "SSH"}
    r = client.post(f"/instance-ha/v1/segments/{uuid}/hosts", json={"host": host}, headers=admin)
    assert r.status_code == 201, r.text
    notice = {
        "type": "PROCESS",
        "hostname": "h1",
        "generated_time": datetime.now(UTC).isoformat(),
        "payload": {"event": "STOPPED", "process_name": "nova-compute"},
    }
    r = client.post("/instance-ha/v1/notifications", json={"notification": notice}, headers=admin)
    assert r.status_code == 202, r.text


def test_generated_requests_get_no_5xx_and_answers_match_the_document(
    settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(settings, db)
    _seed(app)
    schema = schemathesis.openapi.from_asgi(DOCUMENT, app, headers={"X-Auth-Token": ADMIN_TOKEN})
    operations, made = every_operation(schema, (ADMIN_TOKEN, READER_TOKEN, MEMBER_TOKEN), EXAMPLES)
    print(f"schemathesis: {made} requests over {operations} operations, no failure")
    assert operations >= 18 and made >= 1000
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_document_is_behind_a_token_and_says_bodies_answers_and_faults(
    settings: Settings, db: Database
) -> None:
    client = TestClient(_app(settings, db))
    assert client.get(DOCUMENT).status_code == 401
    r = client.get(DOCUMENT, headers={"X-Auth-Token": MEMBER_TOKEN})
    assert r.status_code == 200
    doc = r.json()
    assert doc["servers"] == [{"url": "/instance-ha"}]
    assert set(doc["components"]["securitySchemes"]) == {"AuthToken", "Bearer"}
    operations = [(p, m, op) for p, item in doc["paths"].items() for m, op in item.items()]
    assert len(operations) == 18
    assert not [p for p, _, op in operations if "422" in op["responses"]]
    assert not [p for p, _, _ in operations if "project_id" in p]
    for path, _, op in operations:
        assert ("security" in op) == (path not in {"/", "/v1", "/v1/"}), path
        assert {"400", "406", "429"} <= set(op["responses"]), path
        fault = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
        assert fault.endswith("/Fault")
    create = doc["paths"]["/v1/segments"]["post"]
    wrapped = create["requestBody"]["content"]["application/json"]["schema"]
    assert wrapped["properties"]["segment"]["$ref"].endswith("/SegmentCreate")
    assert {"201", "401", "403", "409", "413"} <= set(create["responses"])
    answer = create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/SegmentAnswer")
    # An id holding a "/" makes the path another route's, which may lack the method.
    assert "405" in doc["paths"]["/v1/segments/{segment_id}"]["put"]["responses"]
    admin = {"X-Auth-Token": ADMIN_TOKEN}
    r = client.put("/instance-ha/v1/segments/x%2Fhosts", json={"segment": {}}, headers=admin)
    assert (r.status_code, list(r.json())) == (405, ["badMethod"])
    hosts = doc["paths"]["/v1/segments/{segment_id}/hosts"]
    assert "503" in hosts["post"]["responses"]
    assert {"name", "reserved", "limit", "marker", "sort_key", "sort_dir"} <= {
        p["name"] for p in hosts["get"]["parameters"]
    }
    notify = doc["paths"]["/v1/notifications"]["post"]["responses"]["202"]
    assert notify["content"]["application/json"]["schema"]["$ref"].endswith("/NotificationAnswer")

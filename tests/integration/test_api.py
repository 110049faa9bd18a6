"""The controller API: health, token auth by role, error envelope, body size limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.api.health import Health, LoopWatch
from medevac.config import Settings
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.records import AlarmStore, OutboxStore
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN


@pytest.fixture
def client(settings: Settings, db: Database) -> TestClient:
    return TestClient(create_app(settings, db), raise_server_exceptions=False)


def test_healthz_needs_no_token(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_missing_token_is_401_with_envelope(client: TestClient) -> None:
    r = client.get("/v1/whoami")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == 401
    assert "X-Auth-Token" in r.json()["error"]["message"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_invalid_token_is_401(client: TestClient) -> None:
    r = client.get("/v1/whoami", headers={"X-Auth-Token": "not-a-real-token-000"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "invalid token"
    assert "not-a-real-token" not in r.text


@pytest.mark.parametrize(
    ("headers", "role"),
    [
        ({"X-Auth-Token": ADMIN_TOKEN}, "admin"),
        ({"Authorization": f"Bearer {READER_TOKEN}"}, "reader"),
        ({"authorization": f"bearer {MEMBER_TOKEN}"}, "member"),
    ],
)
def test_token_in_either_header_maps_to_role(
    client: TestClient, headers: dict[str, str], role: str
) -> None:
    r = client.get("/v1/whoami", headers=headers)
    assert r.status_code == 200
    assert r.json()["role"] == role


def test_member_sees_its_project(client: TestClient) -> None:
    r = client.get("/v1/whoami", headers={"X-Auth-Token": MEMBER_TOKEN})
    assert r.json()["project_id"] == "p1"


@pytest.mark.databases
def test_wrong_role_is_403(client: TestClient, db: Database) -> None:
    db.record_audit("test", "host1", "tester", {"n": 1})
    r = client.get("/v1/audit", headers={"X-Auth-Token": MEMBER_TOKEN})
    assert r.status_code == 403
    assert "member" in r.json()["error"]["message"]
    r = client.get("/v1/audit", headers={"X-Auth-Token": READER_TOKEN})
    assert r.status_code == 200
    assert r.json()["events"][0]["subject"] == "host1"


def test_invalid_query_is_400_naming_the_field(client: TestClient) -> None:
    r = client.get("/v1/audit?limit=0", headers={"X-Auth-Token": ADMIN_TOKEN})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("limit:")


def test_unknown_path_uses_envelope(client: TestClient) -> None:
    r = client.get("/v1/nothing-here", headers={"X-Auth-Token": ADMIN_TOKEN})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404


def test_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/v1/whoami", content=b"x" * 10_000, headers={"X-Auth-Token": ADMIN_TOKEN})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks():  # no Content-Length: the limit must hold on the stream
        for _ in range(10):
            yield b"y" * 1000

    r = client.post("/v1/whoami", content=chunks(), headers={"X-Auth-Token": ADMIN_TOKEN})
    assert r.status_code == 413


def test_openapi_lists_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json", headers={"X-Auth-Token": READER_TOKEN}).json()["paths"]
    assert {"/healthz", "/v1/whoami", "/v1/audit"} <= set(paths)


@pytest.mark.databases
def test_healthz_queries_the_store_and_answers_503_with_the_reason_when_it_does_not_answer(
    client: TestClient, settings: Settings
) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["checks"]["store"]["ok"] and r.json()["checks"]["loop"]["ok"]
    assert r.json()["reasons"] == []
    gone = Database("postgresql+psycopg://nobody:secretpw@127.0.0.1:1/none")
    with TestClient(create_app(settings, gone), raise_server_exceptions=False) as down:
        r = down.get("/healthz")
    assert r.status_code == 503
    assert r.json()["status"] == "unhealthy"
    assert r.json()["reasons"] == ["the store does not answer (OperationalError)"]
    assert "secretpw" not in r.text and "nobody" not in r.text


def test_readyz_says_what_the_controller_still_waits_for(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    r = client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ready", "waiting": []})
    fresh = Database(f"sqlite:///{tmp_path / 'fresh.db'}")  # never migrated
    store = AlarmStore(fresh)
    notifier = Notifier(store, OutboxStore(fresh))
    with TestClient(create_app(settings, fresh, notifier=notifier)) as waiting:
        r = waiting.get("/readyz")
    assert r.status_code == 503
    assert r.json()["waiting"] == [
        f"the store's schema is at None, not {fresh.head_revision()}",
        "the alarms are not loaded",
        "the outbox is not started",
    ]
    fresh.dispose()


def test_a_stalled_event_loop_is_unhealthy_for_a_while(db: Database) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        health = Health(db, loop=LoopWatch(tick=0.01, window=0.5), max_lag=0.1)
        health.loop.start()
        try:
            await asyncio.sleep(0.05)  # the timer runs
            time.sleep(0.3)  # noqa: ASYNC251 - a callback holding the loop: a stall
            await asyncio.sleep(0.05)  # the timer wakes up late
            stalled = await health.health()
            for _ in range(200):  # the stall leaves the window (10 s at most)
                after = await health.health()
                if not after["reasons"]:
                    break
                await asyncio.sleep(0.05)
            return stalled, after
        finally:
            health.close()

    stalled, after = asyncio.run(scenario())
    assert not stalled["checks"]["loop"]["ok"]
    assert stalled["checks"]["loop"]["worst_lag_ms"] >= 200
    assert stalled["reasons"][0].startswith("the event loop stalled")
    assert after["reasons"] == [] and after["status"] == "ok"


def test_openapi_and_docs_need_a_token(client: TestClient) -> None:
    for path in ("/openapi.json", "/docs"):
        assert client.get(path).status_code == 401
    docs = client.get("/docs", headers={"X-Auth-Token": MEMBER_TOKEN})
    assert docs.status_code == 200 and "/openapi.json" in docs.text


@pytest.mark.databases
def test_audit_pages_with_limit_and_offset(client: TestClient, db: Database) -> None:
    for n in range(5):
        db.record_audit("test", f"host{n}", "tester", {"n": n})
    r = client.get("/v1/audit?limit=2&offset=1", headers={"X-Auth-Token": READER_TOKEN})
    assert [e["subject"] for e in r.json()["events"]] == ["host3", "host2"]
    r = client.get("/v1/audit?limit=1001", headers={"X-Auth-Token": READER_TOKEN})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("limit:")

"""Unhandled errors: the exception's text reaches neither the log nor the answer; the
request id in the answer finds the log line; every answer carries X-Request-Id."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.api.app import AnyRole
from medevac.config import Settings
from medevac.storage import Database
from tests.conftest import ADMIN_TOKEN, wait_for
from tests.serving import served

SECRET = "s3cret-db-password-4242"


def failing_app(settings: Settings, db: Database) -> FastAPI:
    app = create_app(settings, db)

    @app.get("/v1/test-failure")
    async def fail(_: AnyRole) -> None:
        raise RuntimeError(f"cannot connect to postgresql://medevac:{SECRET}@db/medevac")

    @app.get("/v2/test-failure")
    async def fail_aodh(_: AnyRole) -> None:
        raise KeyError(SECRET)

    return app


@pytest.fixture
def served_app(settings: Settings, db: Database) -> Iterator[str]:
    """The app under a real uvicorn on loopback, logging through the standard loggers."""
    with served(failing_app(settings, db)) as url:
        yield url


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    return "\n".join(handler.format(r) for r in caplog.records)


@pytest.mark.parametrize("path", ["/v1/test-failure", "/v2/test-failure"])
def test_unhandled_exception_logs_type_and_request_id_never_the_message(
    served_app: str, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    r = httpx.get(served_app + path, headers={"X-Auth-Token": ADMIN_TOKEN}, timeout=10)
    assert r.status_code == 500
    rid = r.headers["x-request-id"]
    assert SECRET not in r.text and rid in r.text
    wait_for("the error's log line", lambda: rid in everything_logged(caplog), timeout=5)
    text = everything_logged(caplog)
    assert SECRET not in text
    assert ("RuntimeError" if path.startswith("/v1") else "KeyError") in text
    assert "Traceback" not in text and "Exception in ASGI application" not in text


def test_500_answers_in_each_prefixs_shape(settings: Settings, db: Database) -> None:
    client = TestClient(failing_app(settings, db))  # raises if anything escapes the app
    r = client.get("/v1/test-failure", headers={"X-Auth-Token": ADMIN_TOKEN})
    assert r.json()["error"]["detail"]["request_id"] == r.headers["x-request-id"]
    r = client.get("/v2/test-failure", headers={"X-Auth-Token": ADMIN_TOKEN})
    assert r.headers["x-request-id"] in r.json()["error_message"]["faultstring"]


def test_every_answer_has_a_request_id(settings: Settings, db: Database) -> None:
    client = TestClient(create_app(settings, db))
    answers = [
        client.get("/healthz"),
        client.get("/v1/whoami"),
        client.post("/v1/whoami", content=b"x" * 10_000, headers={"X-Auth-Token": ADMIN_TOKEN}),
    ]
    ids = {r.headers["x-request-id"] for r in answers}
    assert len(ids) == len(answers)

"""The API's guards: where alarm actions may send, the alarm quota, credentials in action
URLs masked to readers, and the request rate per token."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.api.limits import TokenRateLimit
from medevac.config import Settings
from medevac.notifier.notifier import Notifier
from medevac.storage import Database
from medevac.storage.records import AlarmStore, OutboxStore
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN
from tests.integration.test_alarms_api import doctor_alarm
from tests.serving import served

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
MEMBER = {"X-Auth-Token": MEMBER_TOKEN}  # project p1
READER = {"X-Auth-Token": READER_TOKEN}


def alarm_client(settings: Settings, db: Database) -> TestClient:
    store = AlarmStore(db)
    notifier = Notifier(store, OutboxStore(db))
    return TestClient(create_app(settings, db, notifier=notifier), raise_server_exceptions=False)


@pytest.fixture
def strict(settings: Settings, db: Database) -> Iterator[TestClient]:
    """Default action targets (no loopback allowed), the BMC network 10.9.0.0/16 denied."""
    notifier = settings.notifier.model_copy(
        update={
            "action_allow_networks": [],
            "action_deny_networks": [ipaddress.ip_network("10.9.0.0/16")],
            "action_resolve_timeout": 1.0,
        }
    )
    with alarm_client(settings.model_copy(update={"notifier": notifier}), db) as c:
        yield c


@pytest.mark.parametrize(
    ("action", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1%25eth0]:80/x", "link-local"),
        ("http://127.0.0.1:12346/failure", "loopback"),
        ("http://localhost:12346/failure", "loopback"),
        ("http://10.9.3.4:623/redfish", "action_deny_networks (10.9.0.0/16)"),
        ("http://bmc:pw@10.9.3.4/x", "bmc:***@"),
        ("http://no-such-host.invalid/x", "does not resolve"),
    ],
)
def test_actions_into_link_local_loopback_or_denied_networks_get_400(
    strict: TestClient, action: str, why: str
) -> None:
    alarm_id = strict.post(
        "/v2/alarms", json=doctor_alarm(alarm_actions=["http://192.0.2.1/x"]), headers=MEMBER
    ).json()["alarm_id"]
    created = strict.post(
        "/v2/alarms", json=doctor_alarm(alarm_actions=[], ok_actions=[action]), headers=MEMBER
    )
    replaced = strict.put(
        f"/v2/alarms/{alarm_id}", json=doctor_alarm(alarm_actions=[action]), headers=MEMBER
    )
    for r in (created, replaced):
        assert r.status_code == 400, r.text
        fault = r.json()["error_message"]["faultstring"]
        assert fault.startswith("actions: action ") and why in fault and "pw" not in fault
    actions = {
        u for a in strict.get("/v2/alarms", headers=ADMIN).json() for u in a["alarm_actions"]
    }
    assert actions == {"http://192.0.2.1/x"}  # nothing refused was stored


def test_the_controller_itself_stays_refused_when_loopback_is_allowed(client: TestClient) -> None:
    r = client.post(
        "/v2/alarms", json=doctor_alarm(alarm_actions=["http://127.0.0.1:8780/v2"]), headers=ADMIN
    )
    assert r.status_code == 400 and "this controller" in r.text


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    with alarm_client(settings, db) as c:
        yield c


@pytest.mark.databases
def test_alarm_quota_per_project_is_403_in_aodhs_shape(settings: Settings, db: Database) -> None:
    limited = settings.model_copy(
        update={"api": settings.api.model_copy(update={"alarm_quota": 2})}
    )
    with alarm_client(limited, db) as c:
        for n in range(2):
            assert c.post("/v2/alarms", json=doctor_alarm(name=f"a{n}"), headers=MEMBER).is_success
        r = c.post("/v2/alarms", json=doctor_alarm(name="a2"), headers=MEMBER)
        assert r.status_code == 403
        assert r.json()["error_message"]["faultstring"].startswith("Alarm quota exceeded")
        assert r.json()["error_message"]["faultcode"] == "Client"
        # Another project (here the operators') has its own count.
        assert c.post("/v2/alarms", json=doctor_alarm(name="ops"), headers=ADMIN).is_success
        assert len(c.get("/v2/alarms", headers=MEMBER).json()) == 2


@pytest.mark.databases
def test_action_credentials_are_masked_but_to_admins_and_the_alarms_project(
    client: TestClient,
) -> None:
    secret = "http://vnfm:hunter2@127.0.0.1:12346/failure"
    created = client.post("/v2/alarms", json=doctor_alarm(alarm_actions=[secret]), headers=MEMBER)
    assert created.json()["alarm_actions"] == [secret]
    alarm_id = created.json()["alarm_id"]
    client.put(f"/v2/alarms/{alarm_id}/state", json="ok", headers=MEMBER)

    def everything(headers: dict[str, str]) -> str:
        answers: list[Any] = [
            client.get("/v2/alarms", headers=headers).json(),
            client.get(f"/v2/alarms/{alarm_id}", headers=headers).json(),
            client.get(f"/v2/alarms/{alarm_id}/history", headers=headers).json(),
            client.post("/v2/query/alarms", json={}, headers=headers).json(),
            client.post("/v2/query/alarms/history", json={}, headers=headers).json(),
        ]
        return repr(answers)

    assert "hunter2" in everything(MEMBER) and "hunter2" in everything(ADMIN)
    seen = everything(READER)
    assert "hunter2" not in seen and "vnfm:***@127.0.0.1:12346" in seen


def test_rate_limit_per_token_is_429_with_retry_after(settings: Settings, db: Database) -> None:
    api = settings.api.model_copy(update={"rate_limit": 0.01, "rate_burst": 3})
    client = TestClient(create_app(settings.model_copy(update={"api": api}), db))
    assert all(client.get("/v1/whoami", headers=MEMBER).is_success for _ in range(3))
    r = client.get("/v1/whoami", headers=MEMBER)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == 429
    r = client.get("/v2/capabilities", headers=MEMBER)
    assert r.status_code == 429 and "error_message" in r.json()
    assert client.get("/v1/whoami", headers=READER).is_success  # its own bucket
    assert client.get("/healthz").is_success
    # Made-up tokens share their address's bucket: no fresh bucket per guess.
    guesses = [{"X-Auth-Token": f"guess-{n:020d}"} for n in range(4)]
    assert [client.get("/v1/whoami", headers=g).status_code for g in guesses] == [401] * 3 + [429]


def test_rate_limit_holds_on_a_served_api(settings: Settings, db: Database) -> None:
    api = settings.api.model_copy(update={"rate_limit": 0.01, "rate_burst": 5})
    app = create_app(settings.model_copy(update={"api": api}), db)
    with served(app) as url, httpx.Client(base_url=url, headers=MEMBER) as c:
        statuses = [c.get("/v1/whoami").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert int(c.get("/v1/whoami").headers["retry-after"]) > 1


def test_token_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = TokenRateLimit(lambda *a: asyncio.sleep(0), rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.wait(b"k") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5
    assert limiter.wait(b"k") == 0.0 and limiter.wait(b"k") == 0.5
    assert limiter.wait(b"other") == 0.0

"""External monitor routes over HTTP: auth by role or by a token-less network,
idempotency, 400/404 envelopes, reports ignored with their reason, Doctor's zone-less
time."""

from __future__ import annotations

import logging
from ipaddress import ip_network
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medevac.api import create_app
from medevac.api.auth import TokenRegistry
from medevac.api.errors import install_error_handlers
from medevac.api.external import external_router
from medevac.config import ApiToken, Role, Settings
from medevac.monitor.hosts import HostMonitor
from medevac.monitor.raw import RawFault, RawFaultKind, UnknownHost
from medevac.storage import Database
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN
from tests.monitor_fakes import KEY, NoNova, PowerOn, Sink

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
CLOCK = 1_700_000_000.25


class StepClock:
    """CLOCK, CLOCK + 1, ...: one step per call, so each reading is identifiable."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return CLOCK + self.calls - 1


class RecordingSink:
    """Records faults, ignores repeated keys, knows only ``hosts``."""

    def __init__(self, hosts: set[str]) -> None:
        self.hosts = hosts
        self.faults: list[RawFault] = []
        self._keys: set[str] = set()

    async def submit(self, fault: RawFault) -> bool:
        if fault.host not in self.hosts:
            raise UnknownHost(fault.host)
        if fault.key in self._keys:
            return False
        self._keys.add(fault.key)
        self.faults.append(fault)
        return True


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink({"compute1", "compute2"})


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


def build_client(sink: RecordingSink, *, address: str = "testclient", **router: Any) -> TestClient:
    """The external routes over ``sink``, with an admin, a reader and a member token;
    requests come from ``address``."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.tokens = TokenRegistry(
        [
            ApiToken(name="ops", token=ADMIN_TOKEN, role=Role.ADMIN),
            ApiToken(name="ro", token=READER_TOKEN, role=Role.READER),
            ApiToken(
                name="tenant",
                token=MEMBER_TOKEN,
                role=Role.MEMBER,
                project_id="p1",
            ),
        ]
    )
    app.include_router(external_router(sink, **router))
    return TestClient(app, raise_server_exceptions=False, client=(address, 50000))


@pytest.fixture
def client(sink: RecordingSink, clock: StepClock) -> TestClient:
    return build_client(sink, clock=clock)


def doctor_event(host: str = "compute1", event_id: str = "e1", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "time": "2016-04-12T08:00:00.123",
        "type": "compute.host.down",
        "details": {
            "hostname": host,
            "status": "down",
            "monitor": "monitor_sample",
            "monitor_event_id": event_id,
        },
    }
    event.update(overrides)
    return event


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "status": "firing",
        "receiver": "medevac",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def alert(instance: str | None = "compute1:9100", fp: str = "f1", **kw: Any) -> dict[str, Any]:
    labels = {"alertname": "NodeDown"}
    if instance is not None:
        labels["instance"] = instance
    labels.update(kw.pop("labels", {}))
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fp,
        **kw,
    }


def error(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == status
    message: str = body["message"]
    return message


ROUTES = [("put", "/events", [doctor_event()]), ("post", "/v1/alertmanager", webhook(alert()))]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_needs_a_token(client: TestClient, method: str, path: str, body: Any) -> None:
    r = client.request(method, path, json=body)
    assert "X-Auth-Token" in error(r, 401)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("token", [READER_TOKEN, MEMBER_TOKEN])
def test_reader_and_member_are_forbidden(
    client: TestClient, sink: RecordingSink, method: str, path: str, body: Any, token: str
) -> None:
    r = client.request(method, path, json=body, headers={"X-Auth-Token": token})
    assert "admin" in error(r, 403)
    assert sink.faults == []


def test_unauthenticated_malformed_body_is_401_not_400(client: TestClient) -> None:
    r = client.put("/events", json={"not": "a list"})
    error(r, 401)


def test_doctor_event_accepted_then_duplicate(client: TestClient, sink: RecordingSink) -> None:
    r = client.put("/events", json=[doctor_event()], headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "reasons": []}
    r = client.put("/events", json=[doctor_event()], headers=ADMIN)
    assert r.json() == {"accepted": 0, "duplicates": 1, "ignored": 0, "reasons": []}
    [fault] = sink.faults
    assert fault.kind is RawFaultKind.HOST_DOWN
    assert fault.host == "compute1"
    assert fault.source == "doctor"
    assert (
        fault.key == "doctor:compute.host.down:compute1:2016-04-12T08:00:00.123:monitor_sample:e1"
    )


def test_doctor_sample_monitor_constant_event_id_for_two_hosts_is_two_faults(
    client: TestClient, sink: RecordingSink
) -> None:
    r = client.put("/events", json=[doctor_event()], headers=ADMIN)
    r = client.put("/events", json=[doctor_event(host="compute2")], headers=ADMIN)
    assert r.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "reasons": []}
    assert [f.host for f in sink.faults] == ["compute1", "compute2"]


def test_bearer_header_works_and_received_at_is_one_clock_reading_per_request(
    client: TestClient, sink: RecordingSink, clock: StepClock
) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    events = [doctor_event(event_id="a"), doctor_event(host="compute2", event_id="b")]
    r = client.put("/events", json=events, headers=bearer)
    assert r.json() == {"accepted": 2, "duplicates": 0, "ignored": 0, "reasons": []}
    r = client.put("/events", json=[doctor_event(event_id="c")], headers=bearer)
    assert r.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "reasons": []}
    assert clock.calls == 2
    assert [f.received_at for f in sink.faults] == [CLOCK, CLOCK, CLOCK + 1]
    assert sink.faults[0].observed_at == pytest.approx(1460448000.123)


def test_empty_doctor_list_is_fine(client: TestClient) -> None:
    r = client.put("/events", json=[], headers=ADMIN)
    assert r.json() == {"accepted": 0, "duplicates": 0, "ignored": 0, "reasons": []}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"time": "2016-04-12T08:00:00Z"}, "body", "list"),
        ([doctor_event(time="last tuesday")], "0.time", "ISO 8601"),
        ([doctor_event(type="compute.host.flaky")], "0.type", "'compute.host.up'"),
        ([doctor_event(details={"status": "down"})], "0.details.hostname", "Field required"),
    ],
)
def test_doctor_malformed_is_400_naming_the_field(
    client: TestClient, sink: RecordingSink, body: Any, field: str, words: str
) -> None:
    message = error(client.put("/events", json=body, headers=ADMIN), 400)
    assert message.startswith(f"{field}: "), message
    assert words in message
    assert sink.faults == []


def test_doctor_invalid_json_is_400(client: TestClient) -> None:
    r = client.put("/events", content=b"[{", headers={**ADMIN, "Content-Type": "application/json"})
    error(r, 400)


def test_unknown_host_is_404_and_stops_there(client: TestClient, sink: RecordingSink) -> None:
    client.put("/events", json=[doctor_event(event_id="seen")], headers=ADMIN)
    events = [
        doctor_event(event_id="new"),
        doctor_event(event_id="seen"),
        doctor_event(host="compute9", event_id="x"),
        doctor_event(host="compute2", event_id="after"),
    ]
    r = client.put("/events", json=events, headers=ADMIN)
    message = error(r, 404)
    assert "'compute9'" in message
    assert "1 accepted, 1 duplicate and 0 ignored before it" in message
    assert "1 after it not submitted" in message
    detail = r.json()["error"]["detail"]
    assert detail == {
        "host": "compute9",
        "index": 2,
        "accepted": 1,
        "duplicates": 1,
        "ignored": 0,
    }
    assert [f.key.rsplit(":", 1)[1] for f in sink.faults] == ["seen", "new"]


def test_alertmanager_firing_resolved_and_skipped(client: TestClient, sink: RecordingSink) -> None:
    body = webhook(alert(), alert(instance=None, fp="f2"))
    r = client.post("/v1/alertmanager", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "reasons": [], "skipped": 1}
    r = client.post("/v1/alertmanager", json=body, headers=ADMIN)
    assert r.json() == {"accepted": 0, "duplicates": 1, "ignored": 0, "reasons": [], "skipped": 1}

    resolved = alert(status="resolved", endsAt="2024-05-01T10:05:00Z")
    r = client.post("/v1/alertmanager", json=webhook(resolved), headers=ADMIN)
    assert r.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "reasons": [], "skipped": 0}

    down, up = sink.faults
    assert (down.kind, up.kind) == (RawFaultKind.HOST_DOWN, RawFaultKind.HOST_UP)
    assert down.host == up.host == "compute1"
    assert (down.received_at, up.received_at) == (CLOCK, CLOCK + 2)
    assert up.observed_at - down.observed_at == 300


def test_alertmanager_link_fault(client: TestClient, sink: RecordingSink) -> None:
    a = alert(labels={"medevac_kind": "link.down", "physnet": "datacentre"})
    r = client.post("/v1/alertmanager", json=webhook(a), headers=ADMIN)
    assert r.json()["accepted"] == 1
    [fault] = sink.faults
    assert fault.kind is RawFaultKind.LINK_DOWN
    assert fault.details["physnet"] == "datacentre"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ([alert()], "body", "dictionary"),
        ({**webhook(alert()), "version": "3"}, "version", "'4'"),
        (webhook(alert(status="pending")), "alerts.0.status", "'resolved'"),
        (webhook(alert(labels={"medevac_kind": "disk.full"})), "alerts.0.labels", "link.down"),
        (webhook(alert(startsAt="now")), "alerts.0.startsAt", "ISO 8601"),
    ],
)
def test_alertmanager_malformed_is_400_naming_the_field(
    client: TestClient, body: Any, field: str, words: str
) -> None:
    message = error(client.post("/v1/alertmanager", json=body, headers=ADMIN), 400)
    assert message.startswith(f"{field}: "), message
    assert words in message


def test_alertmanager_unknown_host_is_404(client: TestClient, sink: RecordingSink) -> None:
    body = webhook(alert("compute9:9100"), alert(fp="f2"))
    message = error(client.post("/v1/alertmanager", json=body, headers=ADMIN), 404)
    assert "'compute9'" in message
    assert sink.faults == []


def test_host_label_is_configurable(sink: RecordingSink) -> None:
    client = build_client(sink, host_label="node", clock=lambda: 1.0)
    body = webhook(alert(instance=None, labels={"node": "compute2"}), alert(fp="f2"))
    r = client.post("/v1/alertmanager", json=body, headers=ADMIN)
    assert r.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "reasons": [], "skipped": 1}
    assert sink.faults[0].host == "compute2"


# -- token-less networks -------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_tokenless_network_reports_without_a_token_and_no_other_address_does(
    sink: RecordingSink, method: str, path: str, body: Any
) -> None:
    trusted = build_client(sink, address="10.0.0.7", tokenless=[ip_network("10.0.0.0/24")])
    r = trusted.request(method, path, json=body)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    for address in ("10.0.1.7", "127.0.0.1", "testclient"):
        other = build_client(sink, address=address, tokenless=[ip_network("10.0.0.0/24")])
        assert "X-Auth-Token" in error(other.request(method, path, json=body), 401)
    assert len(sink.faults) == 1


def test_a_token_sent_from_a_tokenless_network_is_still_checked(sink: RecordingSink) -> None:
    trusted = build_client(sink, address="10.0.0.7", tokenless=[ip_network("10.0.0.0/24")])
    events = [doctor_event()]
    assert error(trusted.put("/events", json=events, headers={"X-Auth-Token": "x" * 20}), 401)
    reader = {"X-Auth-Token": READER_TOKEN}
    assert "admin" in error(trusted.put("/events", json=events, headers=reader), 403)
    assert sink.faults == []


# -- the controller's app over its monitor ---------------------------------------------


@pytest.fixture
def served(settings: Settings, db: Database) -> tuple[TestClient, HostMonitor]:
    """The controller's own app and a monitor of compute1 and compute2, configured to
    take reports from 10.0.0.0/24 without a token and Doctor's times in Paris."""
    monitor = HostMonitor({"compute1": "z", "compute2": "z"}, KEY, Sink(), PowerOn(), NoNova())
    settings = settings.model_copy(
        update={
            "monitor": settings.monitor.model_copy(
                update={
                    "tokenless_fault_networks": [ip_network("10.0.0.0/24")],
                    "doctor_time_zone": "Europe/Paris",
                }
            )
        }
    )
    app = create_app(settings, db, monitor=monitor)
    return TestClient(app, raise_server_exceptions=False, client=("10.0.0.7", 50000)), monitor


def test_the_served_app_takes_tokenless_reports_and_says_which_it_ignores(
    served: tuple[TestClient, HostMonitor], caplog: pytest.LogCaptureFixture
) -> None:
    client, monitor = served
    up = doctor_event(type="compute.host.up", details={"hostname": "compute1", "status": "up"})
    with caplog.at_level(logging.INFO, logger="medevac.monitor.hosts"):
        r = client.put("/events", json=[up])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["accepted"], answer["duplicates"], answer["ignored"]) == (0, 0, 1)
    [reason] = answer["reasons"]
    assert reason["index"] == 0 and reason["host"] == "compute1" and reason["kind"] == "host.up"
    assert "heartbeats" in reason["reason"]
    assert any("ignored" in m and "compute1" in m for m in caplog.messages)

    alerts = webhook(
        alert(status="resolved", endsAt="2024-05-01T10:05:00Z"),
        alert(fp="f2", labels={"medevac_kind": "link.down", "physnet": "datacentre"}),
        alert(fp="f3", labels={"medevac_kind": "compute.process.down"}),
    )
    r = client.post("/v1/alertmanager", json=alerts)
    answer = r.json()
    assert (answer["accepted"], answer["ignored"], answer["skipped"]) == (0, 3, 0), answer
    kinds = [(x["index"], x["kind"]) for x in answer["reasons"]]
    assert kinds == [(0, "host.up"), (1, "link.down"), (2, "compute.process.down")]
    assert "agent's own checks" in answer["reasons"][1]["reason"]
    assert all(h["state"] == "UNKNOWN" for h in monitor.snapshot())
    assert list(monitor.recent_verdicts) == []


def test_a_tokenless_report_from_elsewhere_is_401_on_the_served_app(
    settings: Settings, db: Database
) -> None:
    monitor = HostMonitor({"compute1": "z"}, KEY, Sink(), PowerOn(), NoNova())
    app = create_app(settings, db, monitor=monitor)  # no token-less network configured
    client = TestClient(app, raise_server_exceptions=False, client=("10.0.0.7", 50000))
    assert "X-Auth-Token" in error(client.put("/events", json=[doctor_event()]), 401)


# -- Doctor's time -------------------------------------------------------------------


def test_a_zone_less_doctor_time_is_utc_unless_a_zone_is_configured(sink: RecordingSink) -> None:
    naive = doctor_event(time="2016-04-12T08:00:00.123")
    offset = doctor_event(time="2016-04-12T08:00:00.123+00:00", event_id="e2")
    build_client(sink).put("/events", json=[naive, offset], headers=ADMIN)
    paris = build_client(sink, doctor_zone=ZoneInfo("Europe/Paris"))
    paris.put("/events", json=[doctor_event(time="2016-04-12T10:00:00.123")], headers=ADMIN)
    paris.put("/events", json=[doctor_event(time="2016-04-12T08:00:00.123Z")], headers=ADMIN)
    utc, with_offset, local, z = (f.observed_at for f in sink.faults)
    assert utc == with_offset == local == z == pytest.approx(1460448000.123)

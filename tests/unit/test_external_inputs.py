"""Parsing external monitors' payloads: OPNFV Doctor events and Alertmanager webhooks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from medevac.monitor.external import (
    alertmanager_faults,
    doctor_faults,
    host_from_label,
    iso_epoch,
    parse_alertmanager,
    parse_doctor_events,
)
from medevac.monitor.raw import RawFaultKind

T0 = datetime(2016, 4, 12, 8, 0, 0, 123000, tzinfo=UTC).timestamp()


def doctor_event(**overrides: Any) -> dict[str, Any]:
    details = {
        "hostname": "compute1",
        "status": "down",
        "monitor": "monitor_sample",
        "monitor_event_id": "monitor_sample_event1",
    }
    details.update(overrides.pop("details", {}))
    event: dict[str, Any] = {
        "time": "2016-04-12T08:00:00.123",
        "type": "compute.host.down",
        "details": details,
    }
    event.update(overrides)
    return event


def alert(**overrides: Any) -> dict[str, Any]:
    labels = {"alertname": "NodeDown", "instance": "compute1:9100", "job": "node"}
    labels.update(overrides.pop("labels", {}))
    a: dict[str, Any] = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "node down"},
        "startsAt": "2024-05-01T10:00:00.5Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "c0ffee",
    }
    a.update(overrides)
    return a


def webhook(*alerts: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="NodeDown"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "medevac",
        "groupLabels": {"alertname": "NodeDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }
    body.update(overrides)
    return body


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    err = exc.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]), err["msg"]


# -- time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-04-12T08:00:00.123", T0),
        ("2016-04-12T08:00:00.123Z", T0),
        ("2016-04-12T08:00:00.123+00:00", T0),
        ("2016-04-12T10:00:00.123+02:00", T0),
        ("2016-04-12 08:00:00.123", T0),
    ],
)
def test_iso_time_naive_is_utc(text: str, expected: float) -> None:
    assert iso_epoch(text) == pytest.approx(expected)


def test_iso_time_naive_is_read_in_the_zone_given_and_an_offset_wins() -> None:
    paris = ZoneInfo("Europe/Paris")
    assert iso_epoch("2016-04-12T10:00:00.123", paris) == pytest.approx(T0)  # CEST, +02:00
    assert iso_epoch("2016-04-12T08:00:00.123Z", paris) == pytest.approx(T0)
    # 02:30 happens twice on 2026-10-25 in Paris: the earlier one (still +02:00).
    repeated = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    assert iso_epoch("2026-10-25T02:30:00", paris) == repeated


@pytest.mark.parametrize("text", ["2016-04-12", "yesterday", "", "2016-13-01T00:00:00"])
def test_iso_time_rejects_non_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        iso_epoch(text)


# -- Doctor --------------------------------------------------------------------------


def test_doctor_host_down() -> None:
    [fault] = doctor_faults(parse_doctor_events([doctor_event()]), received_at=99.0)
    assert fault.source == "doctor"
    assert fault.kind is RawFaultKind.HOST_DOWN
    assert fault.host == "compute1"
    assert fault.observed_at == pytest.approx(T0)
    assert fault.received_at == 99.0
    assert fault.key == (
        "doctor:compute.host.down:compute1:2016-04-12T08:00:00.123"
        ":monitor_sample:monitor_sample_event1"
    )
    assert fault.details["monitor"] == "monitor_sample"
    assert fault.details["type"] == "compute.host.down"


@pytest.mark.parametrize(
    ("type_", "status"),
    [("compute.host.up", "up"), ("compute.host.up", None), ("compute.host.down", "up")],
)
def test_doctor_host_up(type_: str, status: str | None) -> None:
    event = doctor_event(type=type_, details={"status": status})
    if status is None:
        del event["details"]["status"]
    [fault] = doctor_faults(parse_doctor_events([event]), received_at=0.0)
    assert fault.kind is RawFaultKind.HOST_UP


def test_doctor_up_type_with_down_status_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_doctor_events([doctor_event(type="compute.host.up")])
    assert "contradicts" in first_error(exc)[1]


def test_doctor_z_time_equals_naive_time() -> None:
    naive, zulu = doctor_faults(
        parse_doctor_events(
            [doctor_event(), doctor_event(time="2016-04-12T08:00:00.123Z")],
        ),
        received_at=0.0,
    )
    assert naive.observed_at == zulu.observed_at == pytest.approx(T0)


def test_doctor_reports_sharing_an_event_id_are_duplicates_only_when_the_same() -> None:
    # Doctor's sample monitor sends one constant monitor_event_id in every report.
    events = [
        doctor_event(),
        doctor_event(details={"hostname": "compute2"}),
        doctor_event(time="2016-04-12T09:30:00.000"),
        doctor_event(),  # the first report again: a retry
    ]
    keys = [f.key for f in doctor_faults(parse_doctor_events(events), received_at=0.0)]
    assert len(set(keys[:3])) == 3 and keys[3] == keys[0]


def test_doctor_sample_and_collectd_monitors_top_level_id_is_accepted_and_kept() -> None:
    event = doctor_event(id="monitor_sample_id1")  # as Doctor's monitors send it
    [fault] = doctor_faults(parse_doctor_events([event]), received_at=0.0)
    assert fault.details["id"] == "monitor_sample_id1"
    assert "monitor_sample_id1" not in fault.key


def test_doctor_key_without_event_id() -> None:
    event = doctor_event()
    del event["details"]["monitor_event_id"]
    [fault] = doctor_faults(parse_doctor_events([event]), received_at=0.0)
    assert fault.key == "doctor:compute.host.down:compute1:2016-04-12T08:00:00.123"


def test_doctor_extra_details_are_kept_extra_top_level_is_not() -> None:
    [fault] = doctor_faults(
        parse_doctor_events([doctor_event(details={"reason": "ping lost"})]), received_at=0.0
    )
    assert fault.details["reason"] == "ping lost"
    with pytest.raises(ValidationError) as exc:
        parse_doctor_events([doctor_event(severity="high")])
    assert first_error(exc)[0] == "0.severity"


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"time": "x"}, "", "list"),
        ([doctor_event(type="compute.instance.down")], "0.type", "compute.host.down"),
        ([doctor_event(time="noon")], "0.time", "ISO 8601"),
        ([doctor_event(time=1460448000)], "0.time", "string"),
        ([doctor_event(details={"status": "sideways"})], "0.details.status", "'down'"),
        ([doctor_event(details={"hostname": ""})], "0.details.hostname", "at least 1"),
        ([doctor_event(details={"hostname": 7})], "0.details.hostname", "string"),
    ],
)
def test_doctor_invalid_payloads_name_the_field(payload: Any, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_doctor_events(payload)
    loc, msg = first_error(exc)
    assert loc == field
    assert words in msg


def test_doctor_missing_hostname() -> None:
    event = doctor_event()
    del event["details"]["hostname"]
    with pytest.raises(ValidationError) as exc:
        parse_doctor_events([doctor_event(), event])
    assert first_error(exc) == ("1.details.hostname", "Field required")


# -- Alertmanager --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "host"),
    [
        ("compute1:9100", "compute1"),
        ("compute1", "compute1"),
        ("compute1.example.org:9100", "compute1.example.org"),
        ("10.0.0.5:9100", "10.0.0.5"),
        ("[fd00::5]:9100", "fd00::5"),
        ("fd00::5", "fd00::5"),
        ("compute1:http", "compute1:http"),
        (":9100", None),
        ("", None),
    ],
)
def test_host_from_label(label: str, host: str | None) -> None:
    assert host_from_label(label) == host


def test_firing_alert_is_host_down() -> None:
    batch = alertmanager_faults(parse_alertmanager(webhook(alert())), received_at=5.0)
    assert batch.skipped == 0
    [fault] = batch.faults
    assert fault.source == "alertmanager"
    assert fault.kind is RawFaultKind.HOST_DOWN
    assert fault.host == "compute1"
    assert fault.observed_at == pytest.approx(iso_epoch("2024-05-01T10:00:00.5Z"))
    assert fault.received_at == 5.0
    assert fault.key == "alertmanager:c0ffee:firing:2024-05-01T10:00:00.5Z"


def test_resolved_alert_is_host_up_at_ends_at() -> None:
    a = alert(status="resolved", endsAt="2024-05-01T10:05:00Z")
    [fault] = alertmanager_faults(
        parse_alertmanager(webhook(a, status="resolved")), received_at=0.0
    ).faults
    assert fault.kind is RawFaultKind.HOST_UP
    assert fault.observed_at == pytest.approx(iso_epoch("2024-05-01T10:05:00Z"))
    assert fault.key == "alertmanager:c0ffee:resolved:2024-05-01T10:00:00.5Z"


def test_resolved_alert_needs_ends_at() -> None:
    a = alert(status="resolved")
    del a["endsAt"]
    with pytest.raises(ValidationError) as exc:
        parse_alertmanager(webhook(a))
    assert first_error(exc)[0] == "alerts.0"


def test_key_without_fingerprint_uses_sorted_labels() -> None:
    a = alert(fingerprint="", labels={"b": "2", "a": "1"})
    [fault] = alertmanager_faults(parse_alertmanager(webhook(a)), received_at=0.0).faults
    assert fault.key == (
        "alertmanager:a=1,alertname=NodeDown,b=2,instance=compute1:9100,job=node"
        ":firing:2024-05-01T10:00:00.5Z"
    )


@pytest.mark.parametrize(
    ("medevac_kind", "status", "kind"),
    [
        ("host.down", "firing", RawFaultKind.HOST_DOWN),
        ("host.down", "resolved", RawFaultKind.HOST_UP),
        ("compute.process.down", "firing", RawFaultKind.COMPUTE_PROCESS_DOWN),
        ("compute.process.down", "resolved", RawFaultKind.COMPUTE_PROCESS_UP),
        ("link.down", "firing", RawFaultKind.LINK_DOWN),
        ("link.down", "resolved", RawFaultKind.LINK_UP),
    ],
)
def test_medevac_kind_label(medevac_kind: str, status: str, kind: RawFaultKind) -> None:
    a = alert(
        status=status,
        endsAt="2024-05-01T10:05:00Z",
        labels={"medevac_kind": medevac_kind, "physnet": "datacentre"},
    )
    [fault] = alertmanager_faults(parse_alertmanager(webhook(a)), received_at=0.0).faults
    assert fault.kind is kind
    if kind in (RawFaultKind.LINK_DOWN, RawFaultKind.LINK_UP):
        assert fault.details["physnet"] == "datacentre"


def test_link_down_needs_physnet() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_alertmanager(webhook(alert(labels={"medevac_kind": "link.down"})))
    loc, msg = first_error(exc)
    assert loc == "alerts.0.labels"
    assert "physnet" in msg


def test_unknown_medevac_kind_names_accepted_values() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_alertmanager(webhook(alert(labels={"medevac_kind": "server.down"})))
    loc, msg = first_error(exc)
    assert loc == "alerts.0.labels"
    assert "'compute.process.down'" in msg
    assert "'server.down'" in msg


def test_alerts_without_host_label_are_skipped() -> None:
    no_host = alert(labels={"instance": ""}, fingerprint="a")
    other = alert(fingerprint="b")
    del other["labels"]["instance"]
    body = webhook(alert(), no_host, other)
    batch = alertmanager_faults(parse_alertmanager(body), received_at=0.0)
    assert batch.skipped == 2
    assert [f.host for f in batch.faults] == ["compute1"]


def test_custom_host_label() -> None:
    a = alert(labels={"nodename": "compute7"})
    batch = alertmanager_faults(parse_alertmanager(webhook(a)), 0.0, host_label="nodename")
    assert [f.host for f in batch.faults] == ["compute7"]


def test_unknown_top_level_fields_are_ignored() -> None:
    assert parse_alertmanager(webhook(alert(), somethingNew=True)).alerts


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (webhook(alert(), version="3"), "version"),
        (webhook(alert(status="pending")), "alerts.0.status"),
        (webhook(alert(startsAt="soon")), "alerts.0.startsAt"),
        (webhook(alert(labels={"instance": 9100})), "alerts.0.labels.instance"),
        ([alert()], ""),
    ],
)
def test_alertmanager_invalid_payloads_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_alertmanager(body)
    assert first_error(exc)[0] == field


# -- arbitrary input -----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
texts = st.text(max_size=40) | st.sampled_from(
    ["2016-04-12T08:00:00.123", "2024-05-01T10:00:00Z", "0001-01-01T00:00:00Z", "up", "down"]
)
near_doctor = st.lists(
    st.fixed_dictionaries(
        {
            "time": texts | json_values,
            "type": st.sampled_from(["compute.host.down", "compute.host.up"]) | texts,
            "details": st.fixed_dictionaries(
                {"hostname": texts},
                optional={
                    "status": st.sampled_from(["up", "down"]) | texts | json_values,
                    "monitor": texts,
                    "monitor_event_id": texts,
                    "extra": json_values,
                },
            ),
        }
    ),
    max_size=3,
)
label_dicts = st.dictionaries(
    st.sampled_from(["instance", "medevac_kind", "physnet", "alertname"]) | st.text(max_size=8),
    st.sampled_from(["compute1:9100", "[::1]:1", "link.down", "compute.process.down"]) | texts,
    max_size=5,
)
near_webhook = st.fixed_dictionaries(
    {
        "version": st.just("4"),
        "status": st.sampled_from(["firing", "resolved"]),
        "alerts": st.lists(
            st.fixed_dictionaries(
                {
                    "status": st.sampled_from(["firing", "resolved"]),
                    "labels": label_dicts,
                    "startsAt": texts,
                },
                optional={"endsAt": texts, "fingerprint": texts, "annotations": label_dicts},
            ),
            max_size=3,
        ),
    }
)


@settings(max_examples=300)
@given(st.one_of(json_values, near_doctor))
def test_arbitrary_json_as_doctor_events_only_fails_validation(data: Any) -> None:
    try:
        events = parse_doctor_events(data)
    except ValidationError:
        return
    for fault in doctor_faults(events, received_at=1.0):
        assert fault.host
        assert fault.kind in (RawFaultKind.HOST_DOWN, RawFaultKind.HOST_UP)


@settings(max_examples=300)
@given(st.one_of(json_values, near_webhook))
def test_arbitrary_json_as_webhook_only_fails_validation(data: Any) -> None:
    try:
        webhook_ = parse_alertmanager(data)
    except ValidationError:
        return
    batch = alertmanager_faults(webhook_, received_at=1.0)
    assert len(batch.faults) + batch.skipped == len(webhook_.alerts)
    for fault in batch.faults:
        assert fault.host

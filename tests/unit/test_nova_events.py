"""Decoding Nova's versioned notifications from their oslo.messaging envelope."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from medevac.cloud.nova_events import amqp_url, parse_notification


def envelope(event_type: str, data: dict) -> dict:
    message = {
        "message_id": "m1",
        "publisher_id": "nova-compute:host1",
        "event_type": event_type,
        "priority": "INFO",
        "timestamp": "2026-11-22 01:00:00.000000",
        "payload": {"nova_object.name": "ServiceStatusPayload", "nova_object.data": data},
    }
    return {"oslo.version": "2.0", "oslo.message": json.dumps(message)}


def test_service_update_is_decoded_from_dict_or_text() -> None:
    body = envelope(
        "service.update", {"host": "host1", "binary": "nova-compute", "forced_down": True}
    )
    for raw in (body, json.dumps(body), json.dumps(body).encode()):
        event = parse_notification(raw)
        assert event is not None
        assert event.event_type == "service.update"
        assert event.payload["forced_down"] is True
        assert event.publisher_id == "nova-compute:host1"


def test_garbage_is_none_not_an_error() -> None:
    for raw in (b"not json", {"oslo.message": "{}"}, {"x": 1}, 42, json.dumps({"oslo.message": 5})):
        assert parse_notification(raw) is None


def test_rabbit_urls_become_amqp() -> None:
    assert amqp_url("rabbit://guest:guest@127.0.0.1:5672/") == "amqp://guest:guest@127.0.0.1:5672/"
    assert amqp_url("amqp://h//") == "amqp://h//"


def test_nova_s_send_time_is_read_as_utc() -> None:
    event = parse_notification(envelope("service.update", {"host": "host1"}))
    assert event is not None
    assert event.sent_at() == datetime(2026, 11, 22, 1, 0, tzinfo=UTC).timestamp()
    bad = parse_notification(
        {"oslo.message": json.dumps({"event_type": "x", "payload": {}, "timestamp": "soon"})}
    )
    assert bad is not None and bad.sent_at() is None

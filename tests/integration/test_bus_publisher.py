"""Events on the notification bus: published to a real RabbitMQ, read back as an
oslo.messaging listener would."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from medevac.cloud.nova_events import parse_notification
from medevac.notifier.bus import BusPublisher
from medevac.notifier.events import Event
from tests.conftest import port_open

RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"


def test_events_reach_a_bus_listener_in_olso_format() -> None:
    if not port_open(5672):
        pytest.fail("RabbitMQ is not running; `make services` starts it")
    exchange_name = f"medevac-test-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(exchange_name, type="topic", durable=False)
    events = [
        Event("compute.host.down", time.time(), {"host": "compute3"}),
        Event("medevac.guard.hold", time.time(), {"zone": "z"}, severity="critical"),
    ]
    with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
        q = Queue(
            f"{exchange_name}-listener",
            exchange,
            routing_key="notifications.*",
            exclusive=True,
            auto_delete=True,
        )
        q(conn.default_channel).declare()

        async def publish() -> dict[str, int]:
            bus = BusPublisher(RABBIT, exchange_name, "notifications")
            await bus.start()
            bus.publish(events)
            bus.close()  # the publisher thread drains its queue first
            return bus.stats()

        assert asyncio.run(publish())["published"] == 2
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            message = q(conn.default_channel).get(no_ack=True)
            if message is None:
                time.sleep(0.05)
                continue
            got.append((message.delivery_info["routing_key"], message.body))
    assert [rk for rk, _ in got] == ["notifications.info", "notifications.critical"]
    parsed = [parse_notification(body) for _, body in got]
    assert parsed[0] is not None and parsed[0].event_type == "compute.host.down"
    assert parsed[0].payload == {"host": "compute3"}
    assert parsed[0].publisher_id.startswith("medevac:")
    envelope = json.loads(got[1][1])
    assert envelope["oslo.version"] == "2.0"
    assert json.loads(envelope["oslo.message"])["priority"] == "CRITICAL"

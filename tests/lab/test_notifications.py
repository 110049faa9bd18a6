"""The lab's Nova publishes its versioned notifications on RabbitMQ when it is there."""

from __future__ import annotations

import json
import queue
import threading
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from tests.conftest import port_open
from tests.lab.conftest import RunningLab

RABBIT = "amqp://guest:guest@127.0.0.1:5672//"


def test_service_update_reaches_a_rabbitmq_consumer(lab: RunningLab) -> None:
    if not port_open(5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    assert lab.info["notifications"], "RabbitMQ answers but the lab did not publish to it"
    received: queue.Queue[dict] = queue.Queue()
    ready = threading.Event()
    stop = threading.Event()

    def consume() -> None:
        exchange = Exchange("nova", type="topic", durable=False)
        q = Queue(
            f"medevac-test-{uuid.uuid4().hex[:8]}",
            exchange,
            routing_key="versioned_notifications.info",
            exclusive=True,
            auto_delete=True,
        )
        with (
            Connection(RABBIT) as conn,
            conn.Consumer(
                q, callbacks=[lambda body, msg: (received.put(body), msg.ack())], accept=["json"]
            ),
        ):
            ready.set()
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    continue

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert ready.wait(10), "consumer did not start"
    try:
        lab.run(lab.driver.set_forced_down("host3", True))
        lab.run(lab.driver.set_forced_down("host3", False))
        seen = []
        while True:
            body = received.get(timeout=15)
            envelope = body if isinstance(body, dict) else json.loads(body)
            message = json.loads(envelope["oslo.message"])
            seen.append(message["event_type"])
            if message["event_type"] == "service.update":
                data = message["payload"]["nova_object.data"]
                if data["host"] == "host3" and data["forced_down"]:
                    break
        assert message["publisher_id"].startswith("nova-")
    finally:
        stop.set()
        thread.join(5)

"""Publishes every event on the OpenStack notification bus (RabbitMQ), as
oslo.messaging notifications, so other OpenStack consumers can listen.

Messages have oslo's v2 envelope: ``{"oslo.version": "2.0", "oslo.message": "<json>"}``
with ``message_id``, ``publisher_id`` (``medevac:<controller host>``), ``event_type``,
``priority`` (``INFO``, or ``CRITICAL`` for critical events), ``payload`` (the
event's traits) and ``timestamp``. They go to a topic exchange (``medevac`` by
default) with routing key ``<topic>.<priority in lower case>``, as an
oslo.messaging notifier with ``topics = <topic>`` sends them. A kombu producer
on its own thread does the blocking I/O; a broker that is down loses nothing
already queued in memory (bounded), and is retried.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange

from medevac.cloud.nova_events import amqp_url
from medevac.notifier.events import Event, iso

log = logging.getLogger(__name__)


def oslo_envelope(event: Event, publisher_id: str) -> dict[str, Any]:
    priority = "CRITICAL" if event.severity == "critical" else "INFO"
    message = {
        "message_id": event.message_id,
        "publisher_id": publisher_id,
        "event_type": event.event_type,
        "priority": priority,
        "payload": dict(event.traits),
        "timestamp": iso(event.generated).replace("T", " "),
    }
    return {"oslo.version": "2.0", "oslo.message": json.dumps(message)}


class BusPublisher:
    """A notifier channel: events in, oslo notifications out on a topic exchange."""

    def __init__(
        self,
        url: str,
        exchange: str = "medevac",
        topic: str = "notifications",
        max_queued: int = 100_000,
    ) -> None:
        self.url = amqp_url(url)
        self.exchange = Exchange(exchange, type="topic", durable=False)
        self.topic = topic
        self.publisher_id = f"medevac:{socket.gethostname()}"
        self.counters: Counter[str] = Counter()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._run, name="bus-publisher", daemon=True)

    async def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            try:
                self._queue.put_nowait(oslo_envelope(event, self.publisher_id))
            except queue.Full:
                self.counters["dropped"] += 1

    def _run(self) -> None:
        pending: dict[str, Any] | None = None
        while True:
            try:
                with Connection(self.url, connect_timeout=5) as conn:
                    producer = conn.Producer(serializer="json")
                    while True:
                        if pending is None:
                            pending = self._queue.get()
                        if pending is None:
                            return
                        priority = json.loads(pending["oslo.message"])["priority"].lower()
                        producer.publish(
                            pending,
                            exchange=self.exchange,
                            routing_key=f"{self.topic}.{priority}",
                            declare=[self.exchange],
                            retry=True,
                            retry_policy={"max_retries": 3},
                        )
                        self.counters["published"] += 1
                        pending = None
            except Exception as exc:  # broker away: keep the message, retry
                self.counters["errors"] += 1
                log.warning("notification bus: %s; retrying in 2 s", type(exc).__name__)
                threading.Event().wait(2.0)

    def stats(self) -> dict[str, int]:
        return {"queued": self._queue.qsize(), **self.counters}

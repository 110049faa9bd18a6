"""Nova's versioned notifications (RabbitMQ): the cloud's own word on its services and servers.

A kombu consumer on its own thread binds a private queue to exchange ``nova``,
routing key ``versioned_notifications.info`` (so it never competes with other
consumers of Nova's shared queue), decodes the oslo envelope, and hands each event
to the event loop. ``service.update`` keeps Nova's view of each host current between
polls and reveals a service forced down or disabled by someone else;
``instance.update`` says where servers are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NovaEvent:
    event_type: str
    publisher_id: str
    timestamp: str
    payload: dict[str, Any]  # the versioned object's data

    def sent_at(self) -> float | None:
        """Nova's time of the notification (oslo.messaging's UTC timestamp), or None."""
        try:
            return datetime.fromisoformat(self.timestamp).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None


def parse_notification(body: Any) -> NovaEvent | None:
    """The event inside an oslo.messaging envelope, or None if it is not one."""
    try:
        envelope = json.loads(body) if isinstance(body, str | bytes) else body
        message = envelope["oslo.message"]
        message = json.loads(message) if isinstance(message, str) else message
        payload = message["payload"]
        data = payload.get("nova_object.data", payload) if isinstance(payload, dict) else {}
        return NovaEvent(
            event_type=str(message["event_type"]),
            publisher_id=str(message.get("publisher_id", "")),
            timestamp=str(message.get("timestamp", "")),
            payload=dict(data),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def amqp_url(url: str) -> str:
    """oslo.messaging's ``rabbit://`` URLs, as kombu spells them."""
    return "amqp://" + url.removeprefix("rabbit://") if url.startswith("rabbit://") else url


class NovaNotificationListener:
    """Runs the consumer thread; ``on_event`` is called on the event loop."""

    def __init__(
        self,
        url: str,
        on_event: Callable[[NovaEvent], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._url = amqp_url(url)
        self._on_event = on_event
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nova-notifications", daemon=True)
        self.received = 0
        self.malformed = 0
        self.connected = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _handle(self, body: Any, message: Any) -> None:
        message.ack()
        event = parse_notification(body)
        if event is None:
            self.malformed += 1
            return
        self.received += 1
        self._loop.call_soon_threadsafe(self._on_event, event)

    def _run(self) -> None:
        exchange = Exchange("nova", type="topic", durable=False)
        queue = Queue(
            f"medevac-{uuid.uuid4().hex[:12]}",
            exchange,
            routing_key="versioned_notifications.info",
            exclusive=True,
            auto_delete=True,
        )
        while not self._stop.is_set():
            try:
                with (
                    Connection(self._url, connect_timeout=5) as conn,
                    Consumer(conn, [queue], callbacks=[self._handle], accept=["json"]),
                ):
                    self.connected = True
                    while not self._stop.is_set():
                        try:
                            conn.drain_events(timeout=0.5)
                        except TimeoutError:
                            continue
            except Exception as exc:  # broker down: say so, retry, never crash the loop
                self.connected = False
                log.warning("Nova notifications: %s; retrying in 2 s", type(exc).__name__)
                self._stop.wait(2.0)
        self.connected = False

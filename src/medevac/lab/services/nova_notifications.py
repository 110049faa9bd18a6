"""Forwarding Nova's versioned notifications to RabbitMQ (lab Nova service)."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import urllib.parse
from typing import Any

LOG = logging.getLogger("lab.nova_service")


class NotificationForwarder:
    """Publishes Nova's versioned notifications to RabbitMQ, off Nova's path.

    Nova's thread only enqueues (never blocks; drops when the queue is full).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: queue.Queue[tuple[str, str, str, Any, dict[str, Any]]] = queue.Queue(
            maxsize=20000
        )
        self.enabled = False
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._notifier: Any = None
        self._transport: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> bool:
        parsed = urllib.parse.urlparse(self.url)
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 5672
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            LOG.warning(
                "notification bus %s unreachable (%s): versioned "
                "notifications will not be published",
                host,
                exc,
            )
            return False
        try:
            import oslo_messaging
            from oslo_config import cfg
            from oslo_messaging import transport as om_transport

            conf = cfg.ConfigOpts()
            conf([], project="lab-notify")
            conf.register_opts(om_transport._transport_opts)
            conf.set_override("control_exchange", "nova")
            self._transport = oslo_messaging.get_notification_transport(conf, url=self.url)
            self._notifier = oslo_messaging.Notifier(
                self._transport,
                publisher_id="nova-lab",
                driver="messagingv2",
                topics=["versioned_notifications"],
                retry=1,
            )
        except Exception as exc:
            LOG.warning(
                "notification bus %s unusable (%s): versioned notifications will not be published",
                host,
                exc,
            )
            return False
        self.enabled = True
        self._thread = threading.Thread(target=self._run, daemon=True, name="lab-notify")
        self._thread.start()
        LOG.info("publishing versioned notifications to %s", host)
        return True

    def submit(
        self, publisher_id: str, priority: str, event_type: str, payload: Any, ctxt: dict[str, Any]
    ) -> None:
        if not self.enabled:
            return
        try:
            self.queue.put_nowait((publisher_id, priority, event_type, payload, ctxt))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        warned = False
        while not self._stop.is_set():
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            publisher_id, priority, event_type, payload, ctxt = item
            try:
                notifier = self._notifier.prepare(publisher_id=publisher_id)
                getattr(notifier, priority.lower(), notifier.info)(ctxt, event_type, payload)
                self.sent += 1
                warned = False
            except Exception as exc:
                self.failed += 1
                if not warned:
                    LOG.warning("publishing %s failed: %s", event_type, exc)
                    warned = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.cleanup()

"""One heartbeat thread for every Nova service of the lab (lab Nova service).

Nova's per-service heartbeat timers are replaced by one thread that reports every
live service in turn with Nova's own ``DbDriver._report_state``: at most one
heartbeat write in flight, and the interval can change at run time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

LOG = logging.getLogger("lab.nova_service")


class Heartbeat:
    def __init__(self, report_interval: float) -> None:
        self.report_interval = report_interval
        self._lock = threading.Lock()
        self._services: list[Any] = []  # services the heartbeat thread reports
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._driver: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="lab-heartbeat")
        self._thread.start()

    def register(self, service: Any, driver: Any) -> None:
        """A service joined its group (it replaces an earlier one of the same host
        and binary)."""
        with self._lock:
            self._driver = driver
            self._services = [
                s
                for s in self._services
                if not (s.host == service.host and s.binary == service.binary)
            ]
            self._services.append(service)
        self._wake.set()

    def unregister(self, service: Any) -> None:
        with self._lock:
            self._services = [s for s in self._services if s is not service]

    def set_interval(self, report_interval: float) -> None:
        """Takes effect at once: the thread wakes and reports with the new interval."""
        self.report_interval = report_interval
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                services = list(self._services)
                driver = self._driver
            for svc in services:
                if self._stop.is_set():
                    return
                with self._lock:
                    if svc not in self._services:
                        continue
                try:
                    driver._report_state(svc)
                except Exception:
                    LOG.exception("heartbeat of %s failed", svc.host)
            self._wake.clear()
            delay = self.report_interval - (time.monotonic() - started)
            if delay > 0:
                self._wake.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

"""The cloud driver against a cloud that accepts connections and never answers.

Each call's deadline counts from when a worker thread takes it, a call that got no
worker in time is never sent, and the socket's own timeout frees a worker from the
silent cloud: otherwise every worker could hang on it and no call would leave again.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medevac.cloud import CloudDriver
from medevac.cloud.errors import CloudUnavailable
from tests.conftest import wait_for


class SilentCloud:
    """Reads requests, counts them, answers none."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.requests += data.count(b" HTTP/1.1\r\n")

    def count(self) -> int:
        with self.lock:
            return self.requests

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[tuple[SilentCloud, Path]]:
    cloud = SilentCloud()
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  silent:\n    auth_type: none\n"
        f"    compute_endpoint_override: http://127.0.0.1:{cloud.port}/v2.1\n"
    )
    yield cloud, clouds
    cloud.close()


async def outcomes(driver: CloudDriver, calls: int) -> list[str]:
    results = await asyncio.gather(
        *(driver.list_compute_services() for _ in range(calls)), return_exceptions=True
    )
    assert all(isinstance(r, CloudUnavailable) for r in results), results
    return [str(r) for r in results]


def test_a_silent_cloud_costs_each_call_its_own_deadline_and_frees_the_worker(
    silent: tuple[SilentCloud, Path],
) -> None:
    cloud, clouds = silent
    driver = CloudDriver("silent", clouds_yaml=clouds, max_workers=1, call_timeout=1)
    errors = asyncio.run(outcomes(driver, 3))
    unanswered = [e for e in errors if "no answer within 1 s" in e]
    unsent = [e for e in errors if "not sent: all 1 cloud workers busy for 1 s" in e]
    assert unanswered and len(unanswered) + len(unsent) == 3, errors
    # Each call reported unanswered was sent; none reported unsent ever is.
    wait_for("the sent calls' requests", lambda: cloud.count() >= len(unanswered), 5)
    assert cloud.count() == len(unanswered)

    # The socket timeout gave the worker back: a later call leaves again.
    def sent_again() -> bool:
        before = cloud.count()
        errors = asyncio.run(outcomes(driver, 1))
        return "no answer" in errors[0] and cloud.count() == before + 1

    wait_for("a call sent once the worker is free", sent_again, 15, 0.2)

"""/v1/stream over real HTTP: each caller hears of what it may see as it changes, an idle
stream is kept open with comments, and a client that goes away is forgotten."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from medevac.api.stream import stream_router
from medevac.changes import ChangeFeed
from medevac.config import Settings
from medevac.storage import Database
from tests.api_world import OTHER_MEMBER_TOKEN, build_world
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN, wait_for
from tests.serving import served

ALARM = {
    "name": "web-down",
    "type": "event",
    "event_rule": {"event_type": "compute.instance.update"},
    "alarm_actions": ["http://127.0.0.1:9/hook"],
}


class Listener:
    """One client's stream, read on a thread: every event and comment, as it came."""

    def __init__(self, base: str, token: str) -> None:
        self.lines: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base, token), daemon=True)
        self._thread.start()

    def _read(self, base: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", f"{base}/v1/stream", headers=headers, timeout=30) as r:
            self.status = r.status_code
            event = ""
            for line in r.iter_lines():
                self.lines.append(line)
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.append((event, json.loads(line.removeprefix("data: "))))
                if self._stop.is_set():
                    return

    def changes(self, topic: str) -> list[dict[str, Any]]:
        return [d for e, d in self.events if e == "change" and d["topic"] == topic]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def world(settings: Settings, db: Database) -> Iterator[tuple[str, ChangeFeed]]:
    w = build_world(settings, db)
    feed = ChangeFeed()
    w.notifier.changes = feed
    w.app.include_router(stream_router(feed, keepalive=1.0))
    with served(w.app) as base:
        yield base, feed


def new_alarm(base: str, token: str, name: str) -> str:
    body = {**ALARM, "name": name}
    r = httpx.post(f"{base}/v2/alarms", json=body, headers={"X-Auth-Token": token}, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["alarm_id"])


def test_each_caller_hears_only_of_what_it_may_see(world: tuple[str, ChangeFeed]) -> None:
    base, feed = world
    listeners = {t: Listener(base, t) for t in (ADMIN_TOKEN, READER_TOKEN, MEMBER_TOKEN)}
    try:
        wait_for("every stream to be open", lambda: feed.subscribers == 3, 10)
        theirs = new_alarm(base, OTHER_MEMBER_TOKEN, "theirs")
        mine = new_alarm(base, MEMBER_TOKEN, "mine")
        for token in (ADMIN_TOKEN, READER_TOKEN):
            heard = listeners[token]
            wait_for(
                "both alarms heard of",
                lambda heard=heard: (
                    {c["subject"] for c in heard.changes("alarms")} == {mine, theirs}
                ),
                10,
            )
        member = listeners[MEMBER_TOKEN]
        wait_for("its alarm heard of", lambda: member.changes("alarms"), 10)
        # The other project's alarm was published before this one's: it was not sent.
        assert [c["subject"] for c in member.changes("alarms")] == [mine]
        assert member.events[0] == ("hello", {"name": "tenant", "role": "member"})
    finally:
        for listener in listeners.values():
            listener.close()


def test_an_idle_stream_gets_keepalives_and_a_gone_client_is_forgotten(
    world: tuple[str, ChangeFeed],
) -> None:
    base, feed = world
    listener = Listener(base, READER_TOKEN)
    wait_for("the stream to open", lambda: feed.subscribers == 1, 10)
    wait_for("a keepalive comment", lambda: ": keepalive" in listener.lines, 10)
    listener.close()  # the client hangs up while nothing changes
    wait_for("the subscription to end", lambda: feed.subscribers == 0, 10)


def test_a_stream_needs_a_valid_token(world: tuple[str, ChangeFeed]) -> None:
    base, _ = world
    assert httpx.get(f"{base}/v1/stream", timeout=10).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert httpx.get(f"{base}/v1/stream", headers=bad, timeout=10).status_code == 401


def test_stopping_the_feed_ends_open_streams(world: tuple[str, ChangeFeed]) -> None:
    base, feed = world
    listener = Listener(base, ADMIN_TOKEN)
    wait_for("the stream to open", lambda: feed.subscribers == 1, 10)
    started = time.monotonic()
    feed.close()
    listener._thread.join(timeout=10)
    assert not listener._thread.is_alive(), "the stream stayed open"
    assert time.monotonic() - started < 10

"""This controller in the coordination group (tooz: Redis, or etcd 3 through etcd3gw).

tooz is synchronous and fires nothing by itself, so one thread heartbeats, reads the
live members every ``beat`` and hands each new view to the event loop. The thread also
keeps this controller's lease: the time of its last heartbeat the backend took. Other
members drop it ``timeout`` after that heartbeat, so once ``timeout - beat`` has passed
without one it must act on nothing (``lease_valid``), and when the lease has lapsed it
was replaced: whatever it had started is another member's now (``on_lapsed``), and
this process holds no lease and hands on no view again (it restarts afresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tooz import coordination

from medevac.storage.db import redact_url as display  # the URL for logs and errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterView:
    """The live members as this controller last read them; ``isolated``: it cannot
    reach the coordination backend, and knows of no member, itself included."""

    members: frozenset[str]
    urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    isolated: bool = False


def backend_url(url: str, timeout: float, group: str) -> str:
    """``url`` with tooz's membership and lock timeouts set to ``timeout`` (tooz's
    defaults, 30 s, would make a takeover wait that long) unless it sets them; on
    Redis, its keys in a namespace of the group's: tooz keys a member's heartbeat by
    the member id alone, so two groups on one Redis with a member id in common (every
    host named the same, ctl-1 in two labs) would keep each other's member alive."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    seconds = f"{timeout:g}"
    for key in ("membership_timeout", "lock_timeout", "timeout"):
        query.setdefault(key, seconds)
    if parts.scheme.startswith("redis"):
        query.setdefault("namespace", f"medevac.{group}")
        # tooz retries a refused connection 15 times: each try must be short.
        short = f"{max(timeout / 3, 0.2):g}"
        query.setdefault("socket_timeout", short)
        query.setdefault("socket_connect_timeout", short)
    return urlunsplit(parts._replace(query=urlencode(query)))


class Membership:
    """Joins the group as ``member_id`` (announcing ``api_url``), heartbeats every
    ``beat`` s and tells ``on_view`` (on the loop) each time the live members change."""

    def __init__(
        self,
        url: str,
        member_id: str,
        api_url: str,
        *,
        timeout: float,
        on_view: Callable[[ClusterView], None],
        on_lapsed: Callable[[], None],
        group: bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = backend_url(url, timeout, group.decode())
        self.member_id = member_id
        self.api_url = api_url
        self.timeout = timeout
        self.beat = max(timeout / 6, 0.05)
        self.on_view = on_view
        self.on_lapsed = on_lapsed
        self.clock = clock
        self.group = group
        self.view = ClusterView(frozenset())
        self.errors = 0
        self.last_error: str | None = None
        self._last_ok: float | None = None  # monotonic time of the last heartbeat taken
        self.replaced = False  # told it lapsed: no view is handed on any more
        self._coordinator: Any = None
        self._joined = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lease_valid(self) -> bool:
        """Whether this controller may act: its last heartbeat is recent enough that no
        other member can have replaced it yet. Read by time, not by the thread's
        views: a call to a backend that does not answer can block the thread for many
        seconds (tooz retries), and the lease runs out meanwhile all the same. Never
        again once replaced: this process restarts afresh."""
        last = self._last_ok
        if self.replaced:
            return False
        return last is not None and self.clock() - last < self.timeout - self.beat

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="membership", daemon=True)
        self._thread.start()

    async def joined(self, within: float) -> bool:
        """Wait until the first view with this member in it (at most ``within`` s)."""
        deadline = self.clock() + within
        while self.member_id not in self.view.members:
            if self.clock() > deadline:
                return False
            await asyncio.sleep(self.beat / 2)
        return True

    def stop(self) -> None:
        """Leave the group (the others see it at once) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 2)
        coordinator = self._coordinator
        if coordinator is not None:
            try:
                if self._joined:
                    coordinator.leave_group(self.group).get(timeout=self.timeout)
                coordinator.stop()
            except Exception as exc:  # the backend away: the others time it out
                log.warning("could not leave the controllers' group: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self.clock()
            try:
                view, lapsed = self._read()
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.errors == 1 or self.errors % 50 == 0:
                    log.error("coordination backend %s: %s", display(self.url), self.last_error)
                view, lapsed = None, False
                if not self.lease_valid():
                    view = ClusterView(frozenset(), isolated=True)
            if lapsed:
                # Replaced: this process restarts afresh and takes nothing more (no
                # lease, no view). A view now would claim hosts and adopt their
                # recoveries in a process about to exit, taking them from the members
                # that just took them over.
                self.replaced = True
                self._tell(self.on_lapsed)
            if view is not None and view != self.view and not self.replaced:
                self.view = view
                self._tell(self.on_view, view)
            self._stop.wait(max(0.0, self.beat - (self.clock() - started)))

    def _read(self) -> tuple[ClusterView, bool]:
        """Heartbeat, then read the members (joining first when not in the group);
        True as well when this heartbeat is the first for a whole membership timeout."""
        if self._coordinator is None:
            self._coordinator = coordination.get_coordinator(self.url, self.member_id.encode())
            self._coordinator.start(start_heart=False)
        c = self._coordinator
        if not self._joined:
            me = json.dumps({"api_url": self.api_url}).encode()
            with contextlib.suppress(coordination.MemberAlreadyExist):
                c.join_group_create(self.group, capabilities=me)
            self._joined = True
        before = self._last_ok
        c.heartbeat()
        now = self.clock()
        # Not heard for a whole membership timeout (paused, or cut off): the others
        # have dropped this member and taken over what it held.
        lapsed = before is not None and now - before >= self.timeout
        self._last_ok = now
        members = c.get_members_with_capabilities(self.group).get(timeout=self.timeout)
        if self.member_id.encode() not in members:
            self._joined = False  # dropped meanwhile: join again on the next beat
        urls: dict[str, str] = {}
        for raw, caps in members.items():
            try:
                urls[raw.decode()] = str(json.loads(caps or b"{}").get("api_url", ""))
            except (ValueError, AttributeError):
                urls[raw.decode()] = ""
        return ClusterView(frozenset(urls), MappingProxyType(urls)), lapsed

    def _tell(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

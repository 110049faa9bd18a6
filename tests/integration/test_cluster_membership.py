"""Controllers in the coordination group, on a real Redis and a real etcd 3: each sees
the others, a killed one is gone within the membership timeout, a paused one loses
its lease and is told it was replaced when it wakes."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from medevac.cluster.membership import ClusterView, Membership, backend_url, display
from tests.conftest import port_open

REDIS = "redis://127.0.0.1:6379"
ETCD = "etcd3+http://127.0.0.1:2379"
BACKENDS = {REDIS: 6379, ETCD: 2379}
TIMEOUT = 1.0
# etcd grants no lease shorter than about 1.5 s (its election timeout times 1.5).
TIMEOUTS = {REDIS: TIMEOUT, ETCD: 2.0}


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An asyncio test, run on its own loop."""

    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return sync


@pytest.fixture(params=list(BACKENDS), ids=["redis", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    url: str = request.param
    if not port_open(BACKENDS[url]):
        pytest.fail(f"nothing listens for {url} (make services starts it)")
    return url


@pytest.fixture
def group() -> bytes:
    return f"medevac-test-{uuid.uuid4().hex[:8]}".encode()


class Seen:
    def __init__(self) -> None:
        self.views: list[ClusterView] = []
        self.lapsed = 0

    def view(self, v: ClusterView) -> None:
        self.views.append(v)

    def lapse(self) -> None:
        self.lapsed += 1

    @property
    def members(self) -> frozenset[str]:
        return self.views[-1].members if self.views else frozenset()


def member(group: bytes, name: str, seen: Seen, url: str) -> Membership:
    return Membership(
        url,
        name,
        f"http://{name}:8775",
        timeout=TIMEOUTS.get(url, TIMEOUT),
        on_view=seen.view,
        on_lapsed=seen.lapse,
        group=group,
    )


async def until(what: str, check: Callable[[], object], within: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@run
async def test_members_see_each_other_with_their_api_urls(group: bytes, backend: str) -> None:
    seen = {n: Seen() for n in ("ctl-1", "ctl-2", "ctl-3")}
    ms = [member(group, n, s, backend) for n, s in seen.items()]
    loop = asyncio.get_running_loop()
    for m in ms:
        m.start(loop)
    try:
        everyone = frozenset(seen)
        await until(
            "all three seen by all", lambda: all(s.members == everyone for s in seen.values()), 5
        )
        assert dict(seen["ctl-1"].views[-1].urls)["ctl-2"] == "http://ctl-2:8775"
        assert all(m.lease_valid() for m in ms)
        ms[2].stop()  # leaves the group: seen at once, not after a timeout
        took = await until("ctl-3 gone", lambda: seen["ctl-1"].members == {"ctl-1", "ctl-2"}, 2)
        assert took < TIMEOUT
    finally:
        for m in ms[:2]:
            m.stop()


MEMBER = textwrap.dedent(
    """
    import asyncio, sys
    from medevac.cluster.membership import Membership
    async def main():
        m = Membership(sys.argv[1], "victim", "http://victim", timeout=float(sys.argv[3]),
                       on_view=lambda v: None, on_lapsed=lambda: None, group=sys.argv[2].encode())
        m.start(asyncio.get_running_loop())
        await m.joined(5)
        print("joined", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
    """
)


@run
async def test_a_killed_member_is_gone_within_the_membership_timeout(
    group: bytes, backend: str
) -> None:
    seen = Seen()
    survivor = member(group, "survivor", seen, backend)
    survivor.start(asyncio.get_running_loop())
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MEMBER,
        backend,
        group.decode(),
        str(TIMEOUTS[backend]),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert victim.stdout is not None
        assert await asyncio.wait_for(victim.stdout.readline(), 10) == b"joined\n"
        await until("the victim seen", lambda: "victim" in seen.members, 5)
        os.kill(victim.pid, signal.SIGKILL)
        timeout = TIMEOUTS[backend]
        took = await until("the victim gone", lambda: "victim" not in seen.members, timeout + 1)
        assert seen.members == {"survivor"}
        print(f"a killed member was gone after {took * 1000:.0f} ms (timeout {timeout} s)")
    finally:
        if victim.returncode is None:
            victim.kill()
        await victim.wait()
        survivor.stop()


@run
async def test_a_paused_member_loses_its_lease_and_learns_it_was_replaced(
    group: bytes, backend: str
) -> None:
    other, sleeper_seen = Seen(), Seen()
    watcher = member(group, "watcher", other, backend)
    sleeper = member(group, "sleeper", sleeper_seen, backend)
    loop = asyncio.get_running_loop()
    watcher.start(loop)
    sleeper.start(loop)
    try:
        await until("both", lambda: other.members == {"watcher", "sleeper"}, 5)
        # A pause, as SIGSTOP would make it: its clock goes on, its thread does not beat.
        real = sleeper.clock
        frozen = real()
        sleeper.clock = lambda: frozen
        paused = threading_pause(sleeper)
        gone = TIMEOUTS[backend] + 1
        await until("the sleeper dropped", lambda: other.members == {"watcher"}, gone)
        sleeper.clock = real
        assert not sleeper.lease_valid()  # awake, not yet heard: it must act on nothing
        paused.set()
        await until("told it was replaced", lambda: sleeper_seen.lapsed == 1, 3)
        await until("back as a member", lambda: "sleeper" in other.members, 3)
        assert not sleeper.lease_valid()  # replaced: this process acts on nothing (it restarts)
    finally:
        watcher.stop()
        sleeper.stop()


def threading_pause(m: Membership) -> threading.Event:
    """Stop ``m``'s heartbeats until the returned event is set."""
    resume = threading.Event()
    read = m._read

    def paused() -> tuple[ClusterView, bool]:
        resume.wait()
        m._read = read  # type: ignore[method-assign]
        return read()

    m._read = paused  # type: ignore[method-assign]
    return resume


@run
async def test_a_backend_that_does_not_answer_never_gives_a_lease(group: bytes) -> None:
    seen = Seen()
    lonely = member(group, "lonely", seen, url="redis://127.0.0.1:9")  # nothing listens
    lonely.start(asyncio.get_running_loop())
    try:
        deadline = time.monotonic() + 2 * TIMEOUT
        while time.monotonic() < deadline:
            assert not lonely.lease_valid()
            await asyncio.sleep(0.05)
        assert not seen.members
    finally:
        lonely._stop.set()  # its thread is in tooz's retries: let it end on its own


def test_the_backend_url_gets_timeouts_and_its_password_is_never_shown() -> None:
    url = backend_url("redis://:s3cret@10.0.0.1:6379", 2.0, "g1")
    assert "membership_timeout=2" in url and "lock_timeout=2" in url
    assert "namespace=medevac.g1" in url  # two groups on one Redis never share a key
    assert "s3cret" not in display(url)
    assert "membership_timeout=9" in backend_url("redis://h?membership_timeout=9", 2.0, "g1")

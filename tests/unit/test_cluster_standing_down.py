"""A controller that meets a refusal while it still holds the host tries again (the
store did not answer, the lease was being renewed); one whose host moved to another
controller stands down for good. Pure decisions, over a scripted ownership."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

from medevac.recovery.runtime import RecoveryRuntime, RecoverySettings
from medevac.service import controller as controller_module
from medevac.service.controller import Controller
from medevac.storage.records import Fence


class Scripted:
    """Answers authorize from a script; the host's epoch as the test sets it."""

    member_id = "ctl-1"

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.epoch: int | None = 7
        self.written: list[Fence | None] = []

    def holds(self, host: str) -> bool:
        return self.epoch is not None

    def epoch_of(self, host: str) -> int | None:
        return self.epoch

    async def authorize(
        self,
        host: str,
        effect: str,
        detail: dict[str, Any],
        trace_id: str | None,
        write: Callable[[Fence | None], None] | None = None,
    ) -> bool:
        ok = self.answers.pop(0) if self.answers else False
        if ok and write is not None:
            write(None)
            self.written.append(None)
        return ok


async def until(check: Callable[[], bool]) -> None:
    """Wait (at most 5 s) until ``check()``: a counter with no event to wait on."""
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def runtime(ownership: Scripted) -> RecoveryRuntime:
    nothing = cast(Any, None)
    settings = RecoverySettings()
    return RecoveryRuntime(
        nothing, nothing, nothing, (), settings, nothing, nothing, nothing, ownership=ownership
    )


def test_a_refusal_while_the_host_is_still_held_is_tried_again() -> None:
    own = Scripted([False, False, True])
    rt = runtime(own)
    asyncio.run(asyncio.wait_for(rt.acting_on("h1", "record.fencing", lambda fence: None), 10))
    assert own.written == [None] and rt.stood_down == 0 and own.answers == []


def test_a_host_now_owned_by_another_controller_stands_down_for_good() -> None:
    own = Scripted([False, True])
    rt = runtime(own)

    async def go() -> None:
        task = asyncio.ensure_future(rt.acting_on("h1", "evacuate"))
        await asyncio.sleep(0)  # the first try is refused...
        own.epoch = 8  # ...and a new claim is seen before the next
        await until(lambda: rt.stood_down == 1)  # the step stands down
        assert not task.done()
        task.cancel()

    asyncio.run(go())
    assert own.written == [] and own.answers == [True]  # never tried again


def test_a_takeover_the_store_refused_is_tried_again_while_the_hosts_are_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(controller_module, "TAKEOVER_RETRY", 0.01)
    held = {"h1", "h2"}
    tried: list[set[str]] = []

    async def once(hosts: set[str]) -> None:
        tried.append(set(hosts))
        if len(tried) == 2:
            held.discard("h2")  # lost meanwhile: no longer taken over
        if len(tried) < 3:
            raise OSError("the store is away")

    fake = SimpleNamespace(ownership=SimpleNamespace(holds=held.__contains__), _take_over_once=once)
    asyncio.run(asyncio.wait_for(Controller._take_over(cast(Any, fake), {"h1", "h2", "h3"}), 10))
    assert tried == [{"h1", "h2"}, {"h1", "h2"}, {"h1"}]


def test_a_takeover_of_hosts_no_longer_held_gives_up() -> None:
    held = {"h1"}
    tried: list[set[str]] = []

    async def once(hosts: set[str]) -> None:
        tried.append(hosts)
        held.clear()  # lost while the store did not answer
        raise OSError("the store is away")

    fake = SimpleNamespace(ownership=SimpleNamespace(holds=held.__contains__), _take_over_once=once)
    asyncio.run(asyncio.wait_for(Controller._take_over(cast(Any, fake), {"h1"}), 10))
    assert tried == [{"h1"}]


def test_an_execution_begun_under_an_older_epoch_stands_down_though_the_host_is_back() -> None:
    """Lost and got back while a step ran: the execution still running stands down at
    its next step; the one resumed under the new epoch acts."""
    own = Scripted([True, True])
    rt = runtime(own)

    async def go() -> None:
        async def execution() -> None:
            rt.pin("recover-1", "h1")
            await rt.acting_on("h1", "fence")  # under epoch 7
            own.epoch = 9  # meanwhile another controller held it, and then this one again
            await rt.acting_on("h1", "evacuate")

        stale = asyncio.ensure_future(execution())
        await until(lambda: rt.stood_down == 1)
        assert rt.stale_here("recover-1") and not stale.done()

        async def resumed() -> None:
            rt.pin("recover-1", "h1")
            await rt.acting_on("h1", "evacuate")

        await asyncio.wait_for(asyncio.ensure_future(resumed()), 5)
        assert not rt.stale_here("recover-1")
        stale.cancel()

    asyncio.run(go())
    assert own.answers == [] and rt.stood_down == 1

"""A recovery's wait on a server wakes when Nova says the server's task ended."""

from __future__ import annotations

import asyncio

from medevac.recovery.task_ends import TaskEnds

LONG = 3600.0  # an interval no test may wait out


def rebuilt(server_id: str, task_state: str | None = None) -> dict[str, object]:
    return {"uuid": server_id, "host": "host2", "state": "active", "task_state": task_state}


def test_a_task_ending_wakes_the_wait_on_that_server_only() -> None:
    async def go() -> None:
        ends = TaskEnds(lambda: True)
        with ends.watching("s1") as s1, ends.watching("s2") as s2:
            waiting = asyncio.ensure_future(ends.next_read(s1, LONG, LONG))
            other = asyncio.ensure_future(ends.next_read(s2, LONG, LONG))
            await asyncio.sleep(0)
            ends.on_instance_notification("instance.update", rebuilt("s1", "rebuilding"))
            ends.on_instance_notification("service.update", rebuilt("s1"))
            await asyncio.sleep(0.01)
            assert not waiting.done()  # a task still running, or not an instance event
            ends.on_instance_notification("instance.rebuild.end", rebuilt("s1"))
            assert await asyncio.wait_for(waiting, 1) is True  # Nova said
            assert not other.done() and ends.wakes == 1
            other.cancel()
        assert ends._watchers == {}  # nothing left behind once the waits are over

    asyncio.run(go())


def test_an_end_told_while_the_server_is_being_read_is_not_missed() -> None:
    async def go() -> None:
        ends = TaskEnds(lambda: True)
        with ends.watching("s1") as told:
            # Told after the watch began and before the wait: the wait returns at once,
            # and the next wait waits again.
            ends.on_instance_notification("instance.update", rebuilt("s1"))
            await asyncio.wait_for(ends.next_read(told, LONG, LONG), 1)
            assert not told.is_set()

    asyncio.run(go())


def test_the_wait_polls_fast_unless_notifications_are_heard() -> None:
    async def go() -> None:
        heard = False
        ends = TaskEnds(lambda: heard)
        with ends.watching("s1") as told:
            # not heard: the poll; heard: the safety net. Neither was Nova's word.
            assert await asyncio.wait_for(ends.next_read(told, 0.01, LONG), 1) is False
            heard = True
            assert await asyncio.wait_for(ends.next_read(told, LONG, 0.01), 1) is False

    asyncio.run(go())

"""A controller that gains a host and loses it again while it reads the host's open
incident from the journal (two views applied back to back) keeps no copy of it: the
new owner has it, and a stale copy would shadow the host's next incident here. A retry
its controller decided on but never recorded starts as that retry, taken over or after
a restart."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

from medevac.inspector.incidents import Incident
from medevac.service.controller import Controller
from tests.unit.test_inspector_flow import RecordingCloud, Starter, build


class Journal:
    """The store's open incidents; ``lose`` hosts are lost while they are read."""

    def __init__(self, incidents: list[Incident], held: dict[str, int], lose: set[str]) -> None:
        self.incidents = incidents
        self.held = held
        self.lose = lose

    async def load_open(self) -> list[Incident]:
        await asyncio.sleep(0)
        for host in self.lose:  # the view that takes them away lands meanwhile
            self.held.pop(host, None)
        return self.incidents


def take_over(lose: set[str]) -> dict[str, Incident]:
    """h1's incident, open in the store, as a controller that just gained h1 keeps it."""
    inspector, _ = build(RecordingCloud())
    inc = Incident("h1", "z", 0.0, "trace-1")
    inc.faults["host:"] = 0.0  # its host lost
    held = {"h1": 7}
    me = SimpleNamespace(
        journal=Journal([inc], held, lose),
        inspector=inspector,
        monitor=None,
        recovery=None,
        ownership=SimpleNamespace(holds=held.__contains__),
    )
    asyncio.run(Controller._take_over_once(me, {"h1"}))  # type: ignore[arg-type]
    return inspector.open


def test_a_host_lost_while_its_incidents_load_is_not_adopted() -> None:
    assert "h1" not in take_over(lose={"h1"})


def test_a_host_still_held_has_its_incident_adopted() -> None:
    assert take_over(lose=set())["h1"].host == "h1"


class Workflows:
    """The workflow store: which recoveries it has recorded; the ones taken over."""

    def __init__(self, recorded: set[str]) -> None:
        self.known = recorded
        self.taken_over: list[str] = []

    async def recorded(self, recovery_id: str) -> bool:
        return recovery_id in self.known

    async def take_over(self, recovery_ids: list[str]) -> list[str]:
        self.taken_over += recovery_ids
        return recovery_ids


def retry_left_unrecorded() -> tuple[Incident, Workflows]:
    """h1's incident as a controller that died right after deciding on a retry left it:
    its first recovery recorded (ended in FENCING_FAILED), the retry not yet."""
    inc = Incident("h1", "z", 0.0, "trace-1")
    inc.faults["host:"] = 0.0
    inc.verdicts.append({"kind": "HOST_UNREACHABLE"})
    inc.recovery_id = f"recover-{inc.id}-retry1"
    return inc, Workflows({f"recover-{inc.id}"})


def heir_of(inc: Incident, workflows: Workflows) -> tuple[SimpleNamespace, Starter]:
    inspector, _ = build(RecordingCloud())
    inspector.recovery = starter = Starter()
    inspector.adopt([inc])
    ready = asyncio.Event()
    ready.set()
    me = SimpleNamespace(inspector=inspector, sync=SimpleNamespace(ready=ready))
    me._start_unrecorded = functools.partial(Controller._start_unrecorded, me)  # type: ignore[arg-type]
    return me, starter


def test_a_retry_left_unrecorded_is_started_as_that_retry_by_the_hosts_new_owner() -> None:
    inc, workflows = retry_left_unrecorded()
    me, starter = heir_of(inc, workflows)
    asyncio.run(Controller._take_over_recoveries(me, workflows, [inc]))  # type: ignore[arg-type]
    assert starter.retried == [("h1", 1)] and starter.started == []
    assert workflows.taken_over == [f"recover-{inc.id}-retry1"]


def test_a_retry_left_unrecorded_is_started_as_that_retry_by_its_controller_restarted() -> None:
    inc, workflows = retry_left_unrecorded()
    me, starter = heir_of(inc, workflows)
    asyncio.run(Controller._start_unrecorded(me, workflows, [inc]))  # type: ignore[arg-type]
    assert starter.retried == [("h1", 1)] and starter.started == []
    workflows.known.add(f"recover-{inc.id}-retry1")  # recorded now: not started again
    asyncio.run(Controller._start_unrecorded(me, workflows, [inc]))  # type: ignore[arg-type]
    assert starter.retried == [("h1", 1)]

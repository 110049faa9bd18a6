"""A controller that gains a host and loses it again while it reads the host's open
incident from the journal (two views applied back to back) keeps no copy of it: the
new owner has it, and a stale copy would shadow the host's next incident here."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from medevac.inspector.incidents import Incident
from medevac.service.controller import Controller
from tests.unit.test_inspector_flow import RecordingCloud, build


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

"""The incident journal: an incident the store refuses for a conflict (its host has
another open incident) is dropped and reported, never retried, and every other
incident is still written."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import IntegrityError

from medevac.inspector.incidents import Incident
from medevac.inspector.journal import IncidentJournal


class Store:
    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.saved: list[str] = []

    def save(self, body: dict[str, Any]) -> None:
        if body["host"] in self.refused:
            raise IntegrityError("INSERT", {}, Exception("unique open_host"))
        self.saved.append(body["host"])


def test_a_conflict_is_dropped_and_the_journal_goes_on() -> None:
    async def scenario() -> tuple[Store, list[str], IncidentJournal]:
        store = Store(refused={"h2"})
        told: list[str] = []
        journal = IncidentJournal(store, coalesce=0.0, on_conflict=lambda b: told.append(b["host"]))  # type: ignore[arg-type]
        journal.start()
        for host in ("h1", "h2", "h3"):
            journal.save(Incident(host, "z", 1.0, "t"))
        await asyncio.wait_for(journal.flush(), 5)
        journal.save(Incident("h4", "z", 2.0, "t"))  # later ones are written too
        await asyncio.wait_for(journal.flush(), 5)
        await journal.close()
        return store, told, journal

    store, told, journal = asyncio.run(scenario())
    assert store.saved == ["h1", "h3", "h4"]
    assert told == ["h2"] and journal.conflicts == 1


def test_a_recovery_waits_until_its_incident_is_written_and_not_for_the_coalescing() -> None:
    """``durable``: the incident's latest snapshot is in the store when it returns
    (written at once, not after the coalescing wait); False when the store refused it."""

    async def scenario() -> tuple[Store, list[bool]]:
        store = Store(refused={"h2"})
        journal = IncidentJournal(store, coalesce=30.0)  # type: ignore[arg-type]
        journal.start()
        first, second = Incident("h1", "z", 1.0, "t"), Incident("h2", "z", 1.0, "t")
        journal.save(first)
        journal.save(second)
        said = [
            await asyncio.wait_for(journal.durable(first.id), 5),  # not the 30 s wait
            "h1" in store.saved,
            await asyncio.wait_for(journal.durable(second.id), 5),
            await asyncio.wait_for(journal.durable("never-saved"), 5),
        ]
        await journal.close()
        return store, said

    store, said = asyncio.run(scenario())
    assert said == [True, True, False, True] and store.saved == ["h1"]

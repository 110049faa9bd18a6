"""Routes for external monitors: OPNFV Doctor's ``PUT /events`` and Alertmanager's webhook.

Parsing lives in ``medevac.monitor.external``; these routes authenticate, stamp the
arrival time (the profiler's T01) and hand the faults to the monitor's ``FaultSink``.
Each answer counts the faults accepted (acted on), duplicate and ignored (taken in,
not acted on: each with its reason)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.config import Role
from medevac.monitor.external import (
    AlertmanagerWebhook,
    DoctorEvent,
    alertmanager_faults,
    doctor_faults,
)
from medevac.monitor.raw import FaultSink, Ignored, RawFault, UnknownHost


@dataclass
class Tally:
    """What became of a batch of faults."""

    accepted: int = 0
    duplicates: int = 0
    ignored: list[dict[str, Any]] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "ignored": len(self.ignored),
            "reasons": self.ignored,
        }


async def _submit_all(sink: FaultSink, faults: Sequence[RawFault]) -> Tally:
    """Submit in order; stop at the first unknown host with a 404 saying what went in."""
    tally = Tally()
    for index, fault in enumerate(faults):
        try:
            outcome = await sink.submit(fault)
        except UnknownHost as exc:
            raise ApiError(
                404,
                f"unknown host {exc.host!r} (fault {index} of {len(faults)}); "
                f"{tally.accepted} accepted, {tally.duplicates} duplicate and "
                f"{len(tally.ignored)} ignored before it, "
                f"{len(faults) - index - 1} after it not submitted",
                host=exc.host,
                index=index,
                accepted=tally.accepted,
                duplicates=tally.duplicates,
                ignored=len(tally.ignored),
            ) from None
        if isinstance(outcome, Ignored):
            tally.ignored.append(
                {
                    "index": index,
                    "host": fault.host,
                    "kind": fault.kind.value,
                    "reason": outcome.reason,
                }
            )
        elif outcome:
            tally.accepted += 1
        else:
            tally.duplicates += 1
    return tally


Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


def external_router(
    sink: FaultSink,
    *,
    host_label: str = "instance",
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """Routes for external monitors, delivering to ``sink``; ``clock`` stamps arrival."""
    router = APIRouter(tags=["monitor"])

    def arrival() -> float:
        # A dependency, so the stamp is taken once per request, before body validation.
        # Used as a default (not in Annotated): annotations are strings, this is local.
        return clock()

    @router.put("/events")
    async def doctor_events(
        _: Admin,
        events: list[DoctorEvent],
        received_at: float = Depends(arrival),
    ) -> dict[str, Any]:
        """Raw faults in OPNFV Doctor's inspector format (a JSON list of events)."""
        tally = await _submit_all(sink, doctor_faults(events, received_at))
        return tally.answer()

    @router.post("/v1/alertmanager")
    async def alertmanager(
        _: Admin,
        webhook: AlertmanagerWebhook,
        received_at: float = Depends(arrival),
    ) -> dict[str, Any]:
        """Prometheus Alertmanager's webhook; alerts without the host label are skipped."""
        batch = alertmanager_faults(webhook, received_at, host_label=host_label)
        tally = await _submit_all(sink, batch.faults)
        return {**tally.answer(), "skipped": batch.skipped}

    return router

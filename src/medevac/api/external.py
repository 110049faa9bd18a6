"""Routes for external monitors: OPNFV Doctor's ``PUT /events`` and Alertmanager's webhook.

Parsing lives in ``medevac.monitor.external``; these routes authenticate, stamp the
arrival time (the profiler's T01) and hand the faults to the monitor's ``FaultSink``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Annotated

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
from medevac.monitor.raw import FaultSink, RawFault, UnknownHost


async def _submit_all(sink: FaultSink, faults: Sequence[RawFault]) -> tuple[int, int]:
    """Submit in order; stop at the first unknown host with a 404 saying what went in."""
    accepted = duplicates = 0
    for index, fault in enumerate(faults):
        try:
            if await sink.submit(fault):
                accepted += 1
            else:
                duplicates += 1
        except UnknownHost as exc:
            raise ApiError(
                404,
                f"unknown host {exc.host!r} (fault {index} of {len(faults)}); "
                f"{accepted} accepted and {duplicates} duplicate before it, "
                f"{len(faults) - index - 1} after it not submitted",
                host=exc.host,
                index=index,
                accepted=accepted,
                duplicates=duplicates,
            ) from None
    return accepted, duplicates


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
        _: Admin, events: list[DoctorEvent], received_at: float = Depends(arrival)
    ) -> dict[str, int]:
        """Raw faults in OPNFV Doctor's inspector format (a JSON list of events)."""
        accepted, duplicates = await _submit_all(sink, doctor_faults(events, received_at))
        return {"accepted": accepted, "duplicates": duplicates}

    @router.post("/v1/alertmanager")
    async def alertmanager(
        _: Admin, webhook: AlertmanagerWebhook, received_at: float = Depends(arrival)
    ) -> dict[str, int]:
        """Prometheus Alertmanager's webhook; alerts without the host label are skipped."""
        batch = alertmanager_faults(webhook, received_at, host_label=host_label)
        accepted, duplicates = await _submit_all(sink, batch.faults)
        return {"accepted": accepted, "duplicates": duplicates, "skipped": batch.skipped}

    return router

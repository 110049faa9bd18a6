"""Routes for external monitors: OPNFV Doctor's ``PUT /events`` and Alertmanager's webhook.

Parsing lives in ``medevac.monitor.external``; these routes authenticate, stamp the
arrival time (the profiler's T01) and hand the faults to the monitor's ``FaultSink``.
Each answer counts the faults accepted (acted on), duplicate and ignored (taken in,
not acted on: each with its reason).

A token is needed, with the admin role, unless the configuration names networks
whose reports are taken without one (Doctor's monitors of inspector type ``sample``
send none): a request from such an address that sends no token at all is taken; a
token sent is always checked, and one from anywhere else without a token is a 401.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any

from fastapi import APIRouter, Depends, Request

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

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def _reporter(tokenless: Sequence[Network]) -> Callable[[Request], Awaitable[Principal]]:
    """The caller of a fault route: an admin's token, or no token at all from one of
    the ``tokenless`` networks (judged on the TCP peer's address)."""
    admin = require(Role.ADMIN)

    async def dependency(request: Request) -> Principal:
        headers = request.headers
        if tokenless and "x-auth-token" not in headers and "authorization" not in headers:
            network = _network_of(request.client.host if request.client else None, tokenless)
            if network is not None:
                log.debug("fault report without a token from %s (in %s)", request.client, network)
                principal = Principal(f"network {network}", Role.ADMIN, None)
                request.state.principal = principal
                return principal
        return await admin(request)

    return dependency


def _network_of(address: str | None, networks: Sequence[Network]) -> Network | None:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return None
    return next((n for n in networks if ip in n), None)


def external_router(
    sink: FaultSink,
    *,
    host_label: str = "instance",
    tokenless: Sequence[Network] = (),
    doctor_zone: tzinfo = UTC,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """Routes for external monitors, delivering to ``sink``; ``clock`` stamps arrival;
    reports from ``tokenless`` networks need no token; a Doctor ``time`` without an
    offset is read in ``doctor_zone``."""
    router = APIRouter(tags=["monitor"], dependencies=[Depends(_reporter(tokenless))])

    def arrival() -> float:
        # A dependency, so the stamp is taken once per request, before body validation.
        # Used as a default (not in Annotated): annotations are strings, this is local.
        return clock()

    @router.put("/events")
    async def doctor_events(
        events: list[DoctorEvent],
        received_at: float = Depends(arrival),
    ) -> dict[str, Any]:
        """Raw faults in OPNFV Doctor's inspector format (a JSON list of events)."""
        tally = await _submit_all(sink, doctor_faults(events, received_at, doctor_zone))
        return tally.answer()

    @router.post("/v1/alertmanager")
    async def alertmanager(
        webhook: AlertmanagerWebhook,
        received_at: float = Depends(arrival),
    ) -> dict[str, Any]:
        """Prometheus Alertmanager's webhook; alerts without the host label are skipped."""
        batch = alertmanager_faults(webhook, received_at, host_label=host_label)
        tally = await _submit_all(sink, batch.faults)
        return {**tally.answer(), "skipped": batch.skipped}

    return router

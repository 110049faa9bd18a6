"""Fencing: make sure a failed host is off before anything of it runs elsewhere.

Power off through the host's BMC, then confirm with bounded polling
(``check_max_count`` reads, ``check_interval`` apart, the seed's names). A BMC that
does not answer, refuses the credentials or keeps saying "on" means *not fenced*:
the caller must not evacuate (safety rule 2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from medevac.bmc.ipmi import BmcError, PowerState
from medevac.bmc.power import PowerControl


@dataclass(frozen=True)
class FenceResult:
    confirmed: bool
    reads: int
    seconds: float
    detail: str  # what the BMC said, or why fencing failed (never a credential)
    errors: list[str] = field(default_factory=list)


class Fencer(Protocol):
    async def fence(self, host: str) -> FenceResult: ...


class BmcFencer:
    """Fences hosts through their BMCs (an IPMI or Redfish client per host)."""

    def __init__(
        self,
        clients: Mapping[str, PowerControl],
        *,
        check_interval: float = 0.5,
        check_max_count: int = 20,
    ) -> None:
        self.clients = dict(clients)
        self.check_interval = check_interval
        self.check_max_count = check_max_count

    async def fence(self, host: str) -> FenceResult:
        started = time.monotonic()
        client = self.clients.get(host)
        if client is None:
            return FenceResult(False, 0, 0.0, f"no BMC configured for {host}")
        errors: list[str] = []
        try:
            await client.power_off()
        except BmcError as exc:  # the host may already be off; the reads decide
            errors.append(f"power off: {exc}")
        for read in range(1, self.check_max_count + 1):
            try:
                state = await client.power_state()
            except BmcError as exc:
                errors.append(f"read {read}: {exc}")
            else:
                if state is PowerState.OFF:
                    took = time.monotonic() - started
                    return FenceResult(True, read, took, "BMC reports power off", errors)
                if read % 4 == 0:  # a BMC may drop a request: ask again now and then
                    try:
                        await client.power_off()
                    except BmcError as exc:
                        errors.append(f"power off again: {exc}")
            await asyncio.sleep(self.check_interval)
        took = time.monotonic() - started
        last = errors[-1] if errors else "BMC still reports power on"
        return FenceResult(
            False,
            self.check_max_count,
            took,
            f"power off not confirmed after {self.check_max_count} reads: {last}",
            errors[-5:],
        )

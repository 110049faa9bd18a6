"""What a host monitor under test reports to and reads from, when those are not the
point of the test: a sink that keeps the verdicts, BMCs that say on, no Nova."""

from __future__ import annotations

from typing import Any

from medevac.monitor.verdicts import Verdict


class Sink:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.suspected: list[tuple[str, int]] = []  # (host, verdicts published before)

    def publish(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)


class PowerOn:
    async def power_off(self, host: str) -> bool:
        return False


class NoNova:
    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {}

"""The mass-failure guard: when much of a zone looks down at once, suspect the observer.

Pure and clock-driven. A zone is held (no state action, no recovery) when the monitor
says it is isolated, or when the share of its hosts lost now (incidents still open)
and lost within the window reaches the threshold. Hosts that failed and came back do
not count. A hold lasts ``hold`` seconds after its last trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GuardDecision:
    allowed: bool
    reason: str = ""
    newly_held: bool = False  # this decision started the hold: say so once, loudly


@dataclass
class ZoneGuard:
    fraction: float = 0.5
    window: float = 60.0
    min_hosts: int = 3
    hold: float = 300.0
    held_until: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def is_held(self, zone: str, now: float) -> bool:
        return self.held_until.get(zone, 0.0) > now

    def isolate(self, zone: str, now: float, reason: str) -> bool:
        """The observer looks cut off from the zone; True if that starts a hold."""
        new = not self.is_held(zone, now)
        self.held_until[zone] = now + self.hold
        self.reasons[zone] = reason
        return new

    def admit(
        self, zone: str, lost_since: Mapping[str, float], zone_size: int, now: float
    ) -> GuardDecision:
        """A host of ``zone`` was lost: may the inspector act on it?

        ``lost_since``: every host of the zone lost now (this one included), with the
        time it was lost.
        """
        if self.is_held(zone, now):
            self.held_until[zone] = max(self.held_until[zone], now + self.hold)
            return GuardDecision(False, self.reasons.get(zone, "zone held"))
        lost = sum(1 for since in lost_since.values() if since >= now - self.window)
        if lost >= self.min_hosts and zone_size and lost / zone_size >= self.fraction:
            reason = (
                f"{lost} of {zone_size} hosts of zone {zone!r} lost within "
                f"{self.window:g} s: suspecting the observer, not the hosts"
            )
            self.isolate(zone, now, reason)
            return GuardDecision(False, reason, newly_held=True)
        return GuardDecision(True)

    def state(self, now: float) -> dict[str, dict[str, object]]:
        return {
            zone: {"held_until": until, "reason": self.reasons.get(zone, "")}
            for zone, until in self.held_until.items()
            if until > now
        }

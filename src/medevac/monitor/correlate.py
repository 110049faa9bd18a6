"""Pure decisions of the monitor: which verdict the evidence supports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medevac.monitor.protocol import Checks
from medevac.monitor.verdicts import VerdictKind


def host_loss_verdict(power_off: bool | None) -> VerdictKind:
    """A confirmed-silent host: DOWN only when its BMC says the power is off.

    ``power_off`` is None when the BMC did not answer: the host may still run its
    servers, so it needs fencing, never an evacuation on faith.
    """
    return VerdictKind.HOST_DOWN if power_off else VerdictKind.HOST_UNREACHABLE


def observer_isolated(zone_size: int, silent: int, *, fraction: float, min_hosts: int) -> bool:
    """Most of a zone went silent together: the controller is more likely cut off."""
    return zone_size >= min_hosts and silent >= max(2, fraction * zone_size)


def check_changes(old: Checks | None, new: Checks) -> list[tuple[VerdictKind, str | None]]:
    """Verdicts implied by a change of the agent's local checks (first report: faults only)."""
    before = old or Checks()
    out: list[tuple[VerdictKind, str | None]] = []
    if before.compute_alive and not new.compute_alive:
        out.append((VerdictKind.COMPUTE_PROCESS_DOWN, None))
    elif old is not None and not old.compute_alive and new.compute_alive:
        out.append((VerdictKind.COMPUTE_PROCESS_UP, None))
    for physnet in sorted(set(new.links_down) - set(before.links_down)):
        out.append((VerdictKind.LINK_DOWN, physnet))
    for physnet in sorted(set(before.links_down) - set(new.links_down)):
        out.append((VerdictKind.LINK_UP, physnet))
    for server in sorted(set(new.domains_down) - set(before.domains_down)):
        out.append((VerdictKind.SERVER_DOWN, server))
    for server in sorted(set(before.domains_down) - set(new.domains_down)):
        out.append((VerdictKind.SERVER_UP, server))
    return out


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the monitor knows of a host it found silent, at the moment it judges it."""

    reason: str  # what started the suspicion
    silence_s: float
    confirm_s: float  # suspicion to judgement
    bmc_power: str | None  # "on" | "off" | None (not read)
    bmc_error: str | None
    nova: dict[str, Any] | None  # Nova's view of its compute service
    nova_age_s: float | None
    last_heartbeat_sent_at: float | None
    raw_received_at: float | None  # when the suspicion's signal arrived (T01)
    observed_at: float | None  # when an external source says the fault happened


def loss_evidence(seen: Sighting, *, phi_threshold: float, probes: int) -> dict[str, Any]:
    """The evidence a loss verdict carries, for the audit log and the profiler."""
    return {
        "reason": seen.reason,
        "silence_s": round(seen.silence_s, 3),
        "phi_threshold": phi_threshold,
        "probes_unanswered": probes,
        "bmc_power": seen.bmc_power if seen.bmc_error is None else None,
        "bmc_error": seen.bmc_error,
        "nova": seen.nova,
        "nova_age_s": round(seen.nova_age_s, 3) if seen.nova_age_s is not None else None,
        "last_heartbeat_sent_at": seen.last_heartbeat_sent_at,
        "confirm_s": round(seen.confirm_s, 3),
        "raw_received_at": seen.raw_received_at,
        # The profiler's T00 estimate: the source's word, else the last sign of life.
        "fault_estimated_at": seen.observed_at or seen.last_heartbeat_sent_at,
        # When the reporting monitor says the fault happened (None: no report dated it).
        "fault_reported_at": seen.observed_at,
    }

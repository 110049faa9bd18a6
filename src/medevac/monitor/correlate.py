"""Pure decisions of the monitor: which verdict the evidence supports."""

from __future__ import annotations

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

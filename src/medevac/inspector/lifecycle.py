"""One host's lifecycle, the state machine DESIGN names, as a pure transition function.

What happens to a host (a loss verdict, the guard's hold, each step of its recovery,
its return, its release) moves it from state to state; anything else that is reported
leaves it where it is. The inspector drives it and persists each transition in the
``hosts`` table (with a generation for optimistic locking) and the audit log, with the
fault's trace. The monitor's own view of a host (UP, SUSPECT, LOST, ISOLATED) is the
detector's, changing every few milliseconds; this one is what was decided and done.

::

    UP ──lost──► LOST ──fencing──► FENCING ──fenced──► FENCED ──evacuating──► RECOVERING
     ▲            │▲└──held──► HELD   └──fencing-failed──► FENCING_FAILED         │
     │            │└───────────retried (by an operator)────────────┘              │
     │            └─────────────evacuating (levels 1 and 3)──────────────────────►│
     │                                                        recovery-ended ▼
     ├──healed── LOST, HELD (no recovery ran)                        RECOVERED
     ├──released── AWAITING_RELEASE ◄──back── (a recovery ran, any state after LOST)
     └──maintenance──► MAINTENANCE ──maintenance-ended──► UP
                            └──lost (servers still on it)──► LOST

A host under maintenance that goes silent or powers off once it is empty is doing what
its maintenance is for: ``loss_is_expected`` says so, and the inspector opens no
incident. With servers still on it, the loss is a failure like any other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class HostState(enum.StrEnum):
    UP = "UP"  # in service, as far as medevac knows
    LOST = "LOST"  # a loss verdict stands; the cloud was told
    HELD = "HELD"  # lost, but the guard stopped every action (the observer may be cut off)
    FENCING = "FENCING"  # being powered off through its BMC
    FENCED = "FENCED"  # confirmed off
    FENCING_FAILED = "FENCING_FAILED"  # not confirmed off: forced down, nothing moved
    RECOVERING = "RECOVERING"  # its servers being evacuated
    RECOVERED = "RECOVERED"  # its recovery ended; the host is still down
    AWAITING_RELEASE = "AWAITING_RELEASE"  # back, kept down until released
    MAINTENANCE = "MAINTENANCE"  # planned work: disabled, its servers moved away


class Happening(enum.StrEnum):
    LOST = "lost"
    HELD = "held"
    FENCING = "fencing"
    FENCED = "fenced"
    FENCING_FAILED = "fencing-failed"
    EVACUATING = "evacuating"
    RECOVERY_ENDED = "recovery-ended"
    BACK = "back"  # heard from again after a recovery started
    HEALED = "healed"  # heard from again, no recovery to release it from
    RELEASED = "released"  # put back in service: by medevac, by policy, or in the cloud
    RETRIED = "retried"  # an operator starts its recovery again after fencing failed
    MAINTENANCE = "maintenance"  # an operator started a planned maintenance
    MAINTENANCE_ENDED = "maintenance-ended"  # ... and ended it: back in service


_DOWN = frozenset(
    {
        HostState.LOST,
        HostState.HELD,
        HostState.FENCING,
        HostState.FENCED,
        HostState.FENCING_FAILED,
        HostState.RECOVERING,
        HostState.RECOVERED,
    }
)

# happening -> (the states it applies in, the state it leads to)
TRANSITIONS: dict[Happening, tuple[frozenset[HostState], HostState]] = {
    Happening.LOST: (
        frozenset(
            {
                HostState.UP,
                HostState.RECOVERED,
                HostState.AWAITING_RELEASE,
                HostState.MAINTENANCE,
            }
        ),
        HostState.LOST,
    ),
    Happening.HELD: (frozenset({HostState.LOST}), HostState.HELD),
    Happening.FENCING: (frozenset({HostState.LOST}), HostState.FENCING),
    Happening.FENCED: (frozenset({HostState.FENCING}), HostState.FENCED),
    Happening.FENCING_FAILED: (frozenset({HostState.FENCING}), HostState.FENCING_FAILED),
    Happening.EVACUATING: (frozenset({HostState.LOST, HostState.FENCED}), HostState.RECOVERING),
    Happening.RECOVERY_ENDED: (
        frozenset({HostState.LOST, HostState.FENCING, HostState.FENCED, HostState.RECOVERING}),
        HostState.RECOVERED,
    ),
    Happening.BACK: (_DOWN - {HostState.HELD}, HostState.AWAITING_RELEASE),
    Happening.HEALED: (frozenset({HostState.LOST, HostState.HELD}), HostState.UP),
    Happening.RETRIED: (frozenset({HostState.FENCING_FAILED}), HostState.LOST),
    Happening.RELEASED: (
        frozenset({HostState.AWAITING_RELEASE, HostState.RECOVERED, HostState.FENCING_FAILED}),
        HostState.UP,
    ),
    Happening.MAINTENANCE: (frozenset({HostState.UP}), HostState.MAINTENANCE),
    Happening.MAINTENANCE_ENDED: (frozenset({HostState.MAINTENANCE}), HostState.UP),
}


def advance(state: HostState, happening: Happening) -> HostState | None:
    """The state ``happening`` leads to from ``state``, or None: it does not apply there
    (a late or repeated report), and the host stays where it is."""
    applies_in, to = TRANSITIONS[happening]
    return to if state in applies_in else None


def loss_is_expected(state: HostState, servers_on_host: int) -> bool:
    """Whether a loss verdict about a host in ``state`` with ``servers_on_host`` servers
    is no failure: the host is under maintenance and empty, so its going silent or
    powering off is the planned work. A host under maintenance that still holds
    servers (left by their owners' wish or by policy, or not moved yet) has failed:
    it is recovered as any other, and its owners were told of the maintenance."""
    return state is HostState.MAINTENANCE and servers_on_host == 0


@dataclass(frozen=True, slots=True)
class HostLife:
    """A host's current state, since when (wall clock), and the generation of its row."""

    state: HostState = HostState.UP
    since: float = 0.0
    generation: int = 0

"""An incident whose host was recovered follows the cloud: the pure decisions of when
Nova shows its host put back by hand, and when a new loss is a new incident."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevac.inspector.incidents import (
    Incident,
    ServiceView,
    fails_again,
    released_in_cloud,
)
from medevac.inspector.lifecycle import HostState
from medevac.monitor.verdicts import Verdict, VerdictKind

ENDED_AT = 1000.0


def recovered(*, back: bool = True, ended: float | None = ENDED_AT) -> Incident:
    """A host recovery's incident: its recovery ended at ``ended``; ``back``: heard from
    again since (awaiting release)."""
    inc = Incident("h1", "z", 900.0, "t")
    inc.recovery_id = f"recover-{inc.id}"
    inc.recovery_ended_at = ended
    inc.add_verdict(Verdict(VerdictKind.HOST_UNREACHABLE, "h1", 900.0, {}))
    if back:
        inc.add_verdict(Verdict(VerdictKind.HOST_UP, "h1", 1100.0, {}))
    return inc


def seen(
    view: ServiceView | None, *, back: bool = True, ended: float | None = ENDED_AT
) -> str | None:
    """What ``released_in_cloud`` sees in ``view`` for a recovered host, back or not."""
    state = HostState.AWAITING_RELEASE if back else HostState.RECOVERED
    return released_in_cloud(recovered(back=back, ended=ended), state, view)


def test_a_host_put_back_after_its_recovery_ended_is_released_in_the_cloud() -> None:
    what = seen(ServiceView(True, False, ENDED_AT + 1))
    assert what == "nova-compute enabled and not forced down"


def test_a_view_taken_before_the_recovery_ended_says_nothing() -> None:
    assert seen(ServiceView(True, False, ENDED_AT)) is None
    assert seen(ServiceView(True, False, ENDED_AT - 5)) is None


def test_a_running_recovery_is_never_released_by_the_cloud() -> None:
    assert seen(ended=None, view=ServiceView(True, False, 2e9)) is None


def test_a_host_not_heard_from_again_is_not_released() -> None:
    assert seen(back=False, view=ServiceView(True, False, 2e9)) is None


def test_no_view_no_release() -> None:
    assert seen(None) is None


@given(enabled=st.booleans(), forced_down=st.booleans(), after=st.floats(-100, 100))
def test_only_enabled_and_not_forced_down_and_newer_releases(
    enabled: bool, forced_down: bool, after: float
) -> None:
    as_of = ENDED_AT + after
    what = seen(ServiceView(enabled, forced_down, as_of))
    assert (what is not None) == (enabled and not forced_down and as_of > ENDED_AT)


def test_the_monitors_view_reads_as_a_service_view() -> None:
    view = ServiceView.of({"status": "enabled", "forced_down": False, "state": "up"}, 5.0)
    assert view == ServiceView(True, False, 5.0)
    assert ServiceView.of({"status": "disabled", "forced_down": True}, 5.0) == ServiceView(
        False, True, 5.0
    )


LOSS = [VerdictKind.HOST_DOWN, VerdictKind.HOST_UNREACHABLE]


@given(kind=st.sampled_from(list(VerdictKind)), ended=st.booleans(), back=st.booleans())
def test_a_new_incident_only_for_a_loss_after_an_ended_recovery_of_a_host_back(
    kind: VerdictKind, ended: bool, back: bool
) -> None:
    inc = recovered(back=back, ended=ENDED_AT if ended else None)
    again = fails_again(inc, Verdict(kind, "h1", 2000.0, {}))
    assert again == (kind in LOSS and ended and back)

"""A host's lifecycle: the pure transitions, and the order the inspector drives them in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevac.inspector.lifecycle import (
    TRANSITIONS,
    Happening,
    HostState,
    advance,
    loss_is_expected,
)


def walk(*happenings: Happening, start: HostState = HostState.UP) -> list[HostState]:
    state, seen = start, []
    for h in happenings:
        state = advance(state, h) or state
        seen.append(state)
    return seen


def test_a_fenced_and_evacuated_host_waits_for_its_release() -> None:
    assert walk(
        Happening.LOST,
        Happening.FENCING,
        Happening.FENCED,
        Happening.EVACUATING,
        Happening.RECOVERY_ENDED,
        Happening.BACK,
        Happening.RELEASED,
    ) == [
        HostState.LOST,
        HostState.FENCING,
        HostState.FENCED,
        HostState.RECOVERING,
        HostState.RECOVERED,
        HostState.AWAITING_RELEASE,
        HostState.UP,
    ]


def test_an_unconfirmed_fencing_stays_until_an_operator_acts() -> None:
    states = walk(
        Happening.LOST,
        Happening.FENCING,
        Happening.FENCING_FAILED,
        Happening.EVACUATING,  # never: nothing moves from a host not confirmed off
        Happening.RECOVERY_ENDED,
    )
    assert states[-3:] == [HostState.FENCING_FAILED] * 3


def test_a_held_host_is_not_recovered_and_heals_back_up() -> None:
    assert walk(Happening.LOST, Happening.HELD, Happening.FENCING, Happening.HEALED) == [
        HostState.LOST,
        HostState.HELD,
        HostState.HELD,
        HostState.UP,
    ]


def test_a_host_that_fails_again_before_its_release_is_lost_anew() -> None:
    assert advance(HostState.AWAITING_RELEASE, Happening.LOST) is HostState.LOST
    assert advance(HostState.RECOVERED, Happening.LOST) is HostState.LOST
    assert advance(HostState.RECOVERING, Happening.LOST) is None  # it joins its recovery


@given(st.lists(st.sampled_from(list(Happening)), max_size=30))
def test_only_a_release_or_a_healing_brings_a_host_back_up(happenings: list[Happening]) -> None:
    state = HostState.UP
    for h in happenings:
        to = advance(state, h)
        if to is HostState.UP and state is not HostState.UP:
            assert h in (Happening.RELEASED, Happening.HEALED, Happening.MAINTENANCE_ENDED)
        if to is HostState.RECOVERING:
            assert state in (HostState.LOST, HostState.FENCED)  # never from FENCING_FAILED
        state = to or state


def test_every_happening_leads_somewhere_from_somewhere() -> None:
    assert set(TRANSITIONS) == set(Happening)
    assert all(applies_in for applies_in, _ in TRANSITIONS.values())


def test_a_retried_recovery_goes_through_fencing_again() -> None:
    assert walk(
        Happening.LOST,
        Happening.FENCING,
        Happening.FENCING_FAILED,
        Happening.RETRIED,
        Happening.FENCING,
        Happening.FENCED,
        Happening.EVACUATING,
        Happening.RECOVERY_ENDED,
    ) == [
        HostState.LOST,
        HostState.FENCING,
        HostState.FENCING_FAILED,
        HostState.LOST,
        HostState.FENCING,
        HostState.FENCED,
        HostState.RECOVERING,
        HostState.RECOVERED,
    ]


def test_only_a_host_whose_fencing_failed_may_be_retried() -> None:
    allowed = {s for s in HostState if advance(s, Happening.RETRIED) is not None}
    assert allowed == {HostState.FENCING_FAILED}
    assert advance(HostState.FENCING_FAILED, Happening.RETRIED) is HostState.LOST


def test_a_maintenance_starts_only_on_a_host_in_service_and_ends_back_up() -> None:
    assert walk(Happening.MAINTENANCE, Happening.MAINTENANCE_ENDED) == [
        HostState.MAINTENANCE,
        HostState.UP,
    ]
    for state in set(HostState) - {HostState.UP}:
        assert advance(state, Happening.MAINTENANCE) is None, state
    for state in set(HostState) - {HostState.MAINTENANCE}:
        assert advance(state, Happening.MAINTENANCE_ENDED) is None, state


def test_a_host_lost_during_its_maintenance_is_recovered_like_any_other() -> None:
    assert walk(
        Happening.MAINTENANCE,
        Happening.LOST,
        Happening.FENCING,
        Happening.FENCED,
        Happening.EVACUATING,
        Happening.RECOVERY_ENDED,
        Happening.MAINTENANCE_ENDED,  # no: its release puts it back, not the maintenance
        Happening.BACK,
        Happening.RELEASED,
    ) == [
        HostState.MAINTENANCE,
        HostState.LOST,
        HostState.FENCING,
        HostState.FENCED,
        HostState.RECOVERING,
        HostState.RECOVERED,
        HostState.RECOVERED,
        HostState.AWAITING_RELEASE,
        HostState.UP,
    ]


def test_only_an_empty_host_under_maintenance_may_go_silent_without_a_recovery() -> None:
    assert loss_is_expected(HostState.MAINTENANCE, 0)
    assert not loss_is_expected(HostState.MAINTENANCE, 1)  # servers left on it: a failure
    for state in set(HostState) - {HostState.MAINTENANCE}:
        assert not loss_is_expected(state, 0), state


@given(st.sampled_from(list(HostState)), st.integers(min_value=0, max_value=10_000))
def test_an_expected_loss_is_never_one_with_servers_to_save(state: HostState, servers: int) -> None:
    if loss_is_expected(state, servers):
        assert state is HostState.MAINTENANCE and servers == 0

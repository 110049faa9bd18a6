"""The recovery's decisions, proven without a lab: fencing before evacuation (safety
rules 1 and 2), how a server is brought back where it is, how its arrival elsewhere is
judged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevac.recovery.policy import (
    AfterFencing,
    Arrival,
    Level,
    Restart,
    after_fencing,
    judge_arrival,
    must_fence,
    restart_action,
)

VERDICTS = st.sampled_from(["HOST_DOWN", "HOST_UNREACHABLE"])
LEVELS = st.sampled_from(list(Level))


@given(level=LEVELS, verdict=VERDICTS)
def test_an_unconfirmed_fencing_never_leads_to_an_evacuation_at_any_level_but_1(
    level: Level, verdict: str
) -> None:
    if must_fence(level, verdict):
        assert after_fencing(False) is AfterFencing.HOLD
    else:  # evacuated unfenced: only level 1, or level 3 when the BMC already said off
        assert level is Level.FORCE_DOWN_ONLY or (
            level is Level.NOVA_SEES_DOWN and verdict == "HOST_DOWN"
        )


@given(level=LEVELS)
def test_a_host_that_may_be_alive_is_fenced_at_every_level_but_1(level: Level) -> None:
    assert must_fence(level, "HOST_UNREACHABLE") == (level is not Level.FORCE_DOWN_ONLY)


def test_the_default_level_fences_even_a_host_its_bmc_says_off() -> None:
    assert must_fence(Level.FENCE, "HOST_DOWN")


def test_a_confirmed_fencing_lets_the_evacuation_go() -> None:
    assert after_fencing(True) is AfterFencing.EVACUATE


def test_restart_starts_a_stopped_server_and_reboots_a_dead_one() -> None:
    assert restart_action("SHUTOFF", 4, None) is Restart.START
    assert restart_action("ACTIVE", 4, None) is Restart.REBOOT  # domain dead, Nova unaware
    assert restart_action("ERROR", 0, None) is Restart.REBOOT
    assert restart_action("ACTIVE", 1, None) is Restart.RUNNING
    assert restart_action("ACTIVE", 4, "rebooting_hard") is Restart.BUSY


@given(
    status=st.sampled_from(["ACTIVE", "SHUTOFF", "ERROR"]),
    power=st.sampled_from([0, 1, 4, None]),
    task=st.sampled_from([None, "rebooting_hard", "powering-on"]),
)
def test_a_task_under_way_is_never_interrupted(
    status: str, power: int | None, task: str | None
) -> None:
    action = restart_action(status, power, task)
    if task is not None:
        assert action is Restart.BUSY


def test_arrival_is_on_another_host_in_the_state_it_had() -> None:
    assert judge_arrival("h2", "ACTIVE", None, "h1", "ACTIVE", stop_asked=False) is Arrival.ARRIVED
    assert judge_arrival("h2", "SHUTOFF", None, "h1", "SHUTOFF", stop_asked=True) is Arrival.ARRIVED


def test_a_stopped_server_rebuilt_running_is_stopped_once() -> None:
    first = judge_arrival("h2", "ACTIVE", None, "h1", "SHUTOFF", stop_asked=False)
    again = judge_arrival("h2", "ACTIVE", None, "h1", "SHUTOFF", stop_asked=True)
    assert (first, again) == (Arrival.STOP_IT, Arrival.WAIT)


def test_rebuilt_in_error_has_failed() -> None:
    assert judge_arrival("h2", "ERROR", None, "h1", "ACTIVE", stop_asked=False) is Arrival.FAILED


@given(
    host=st.sampled_from([None, "h1", "h2"]),
    status=st.sampled_from(["ACTIVE", "SHUTOFF", "ERROR", "REBUILD"]),
    task=st.sampled_from([None, "rebuilding", "rebuild_spawning"]),
    expected=st.sampled_from(["ACTIVE", "SHUTOFF"]),
    stop_asked=st.booleans(),
)
def test_nothing_is_judged_while_on_the_failed_host_or_rebuilding(
    host: str | None, status: str, task: str | None, expected: str, stop_asked: bool
) -> None:
    seen = judge_arrival(host, status, task, "h1", expected, stop_asked=stop_asked)
    if host in (None, "h1") or task is not None:
        assert seen is Arrival.WAIT
    if seen is Arrival.ARRIVED:
        assert status == expected

"""Phi-accrual detector: never suspects a live host within its stated bounds; a dead
host is suspected within a bound (properties, with hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medevac.monitor.detector import PhiAccrualDetector, phi

INTERVAL = 0.1
THRESHOLD = 8.0
JITTER = 0.02


def feed(d: PhiAccrualDetector, gaps: list[float], start: float = 0.0) -> float:
    t = start
    d.heartbeat(t)
    for gap in gaps:
        t += gap
        d.heartbeat(t)
    return t


def max_phi_before(d: PhiAccrualDetector, last: float, gap: float, steps: int = 20) -> float:
    """The largest phi seen while waiting ``gap`` for the next heartbeat."""
    return max(d.phi(last + gap * i / steps) for i in range(1, steps + 1))


@given(st.lists(st.floats(-JITTER, JITTER), min_size=60, max_size=300), st.floats(-JITTER, JITTER))
@settings(max_examples=200)
def test_live_host_with_jitter_is_never_suspected(jitters: list[float], next_jitter: float) -> None:
    d = PhiAccrualDetector(INTERVAL)
    last = feed(d, [INTERVAL + j for j in jitters])
    # The delay to the next heartbeat is a gap of the same kind: jittered, not lost.
    assert max_phi_before(d, last, INTERVAL + next_jitter) < THRESHOLD


@given(
    st.lists(st.tuples(st.floats(-JITTER, JITTER), st.booleans()), min_size=60, max_size=300),
    st.floats(-JITTER, JITTER),
    st.booleans(),
)
@settings(max_examples=200)
def test_with_acceptable_pause_one_lost_heartbeat_is_not_suspected(
    history: list[tuple[float, bool]], next_jitter: float, next_lost: bool
) -> None:
    # Bounded loss: no two heartbeats in a row are lost (each gap is 1 or 2 intervals).
    d = PhiAccrualDetector(INTERVAL, acceptable_pause=INTERVAL)
    gaps = [INTERVAL * (2 if lost else 1) + j for j, lost in history]
    last = feed(d, gaps)
    next_gap = INTERVAL * (2 if next_lost else 1) + next_jitter
    assert max_phi_before(d, last, next_gap) < THRESHOLD


@given(st.lists(st.floats(-JITTER, JITTER), min_size=60, max_size=300))
@settings(max_examples=200)
def test_dead_host_is_suspected_within_its_bound(jitters: list[float]) -> None:
    d = PhiAccrualDetector(INTERVAL)
    last = feed(d, [INTERVAL + j for j in jitters])
    # Bound for 100 ms heartbeats with up to 20 ms jitter: suspected 250 ms after the
    # last heartbeat at the latest (mean + 5.6 std, std at most ~23 ms here).
    assert d.phi(last + 0.25) >= THRESHOLD
    assert d.time_to_threshold(THRESHOLD) <= 0.25


def test_phi_grows_with_silence_and_is_zero_before_any_heartbeat() -> None:
    d = PhiAccrualDetector(INTERVAL)
    assert d.phi(123.0) == 0.0
    feed(d, [INTERVAL] * 50)
    values = [d.phi(5.0 + x / 100) for x in range(0, 40)]
    assert values == sorted(values)


def test_phi_function_extremes() -> None:
    assert phi(0.0, 0.1, 0.02) < 0.01
    assert phi(10.0, 0.1, 0.02) == float("inf")


def test_an_outage_is_not_learned_as_jitter() -> None:
    d = PhiAccrualDetector(INTERVAL)
    last = feed(d, [INTERVAL] * 100)
    d.heartbeat(last + 30.0)  # the host was away for 30 s, then came back
    last = feed(d, [INTERVAL] * 5, start=last + 30.0)
    assert d.mean < 0.11
    assert d.phi(last + 0.25) >= THRESHOLD  # the next outage is seen as fast as before


def test_a_backlog_read_after_a_stall_is_not_learned() -> None:
    # The controller stalled for 3 s (start-up, CPU starved): 30 heartbeats waited in
    # its socket and are read back to back. Learning those ~0 s gaps once halved the
    # mean and more than doubled the deviation: the next fault took 300 ms to see.
    d = PhiAccrualDetector(INTERVAL)
    last = feed(d, [INTERVAL] * 50)
    before = d.time_to_threshold(THRESHOLD)
    last = feed(d, [0.0001] * 30, start=last + 3.0)
    last = feed(d, [INTERVAL] * 10, start=last + INTERVAL)
    assert abs(d.mean - INTERVAL) < 0.005
    assert d.time_to_threshold(THRESHOLD) == pytest.approx(before)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=60, max_size=300),
    st.floats(-JITTER, JITTER),
)
@settings(max_examples=200)
def test_receiver_stalls_never_pull_the_mean_down(stalls: list[float], jitter: float) -> None:
    # A fixed-rate sender; the receiver reads each heartbeat when it is free again
    # (arrival = max(send, end of its last stall)): a long gap, a burst, regular gaps.
    # The long gaps are real delays and widen the deviation; the bursts must not also
    # drag the mean below the sender's rhythm.
    d = PhiAccrualDetector(INTERVAL)
    t, free_at = 0.0, 0.0
    for i, stall in enumerate(stalls):
        sent = i * INTERVAL
        if stall > 0.9:  # now and then the receiver stalls, for up to 3 s
            free_at = max(free_at, sent) + (stall - 0.9) * 30
        t = max(sent + jitter * (i % 2), free_at, t + 0.0001)  # one read at a time
        d.heartbeat(t)
    assert d.mean >= INTERVAL - JITTER

"""Quorum before a verdict: a majority of the live controllers must find the host
silent; a peer that still hears it blocks the verdict, even against a silent
majority; without enough answers the controller asking is the one cut off."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevac.cluster.quorum import Agreement, decide

OWN = 0.5  # the owner suspects the host after 500 ms of silence
SLACK = 0.1
FLOOR = 0.15


def test_alone_the_owner_decides() -> None:
    assert decide(OWN, {}, SLACK, FLOOR).agreement is Agreement.AGREED


def test_two_of_three_silent_agree() -> None:
    assert decide(OWN, {"b": 0.48, "c": None}, SLACK, FLOOR).agreement is Agreement.AGREED
    assert decide(OWN, {"b": 0.48, "c": 0.45}, SLACK, FLOOR).agreement is Agreement.AGREED


def test_one_peer_that_still_hears_it_vetoes_a_silent_majority() -> None:
    """Two links silent at once (bursts of loss) while the third heard the host 20 ms
    ago: the host is alive, so no verdict; a dead host is silent to all three."""
    got = decide(OWN, {"b": 0.48, "c": 0.02}, SLACK, FLOOR)
    assert got.agreement is Agreement.HEARD_ELSEWHERE and got.silent == 2 and got.needed == 2


def test_peers_that_hear_it_block_the_verdict() -> None:
    got = decide(OWN, {"b": 0.05, "c": 0.02}, SLACK, FLOOR)
    assert got.agreement is Agreement.HEARD_ELSEWHERE and got.silent == 1 and got.needed == 2


def test_no_answers_means_no_majority() -> None:
    assert decide(OWN, {"b": None, "c": None}, SLACK, FLOOR).agreement is Agreement.NO_MAJORITY


def test_a_peer_that_never_heard_it_agrees() -> None:
    assert decide(OWN, {"b": float("inf"), "c": None}, SLACK, FLOOR).agreement is Agreement.AGREED


silences = st.one_of(st.none(), st.floats(0, 5))


@given(st.floats(0.1, 5), st.dictionaries(st.sampled_from("bcdefg"), silences, max_size=6))
def test_a_verdict_only_with_a_strict_majority_silent_and_nobody_hearing_it(
    own: float, answers: dict[str, float | None]
) -> None:
    """``own``: the silence the owner suspects at."""
    got = decide(own, answers, SLACK, FLOOR)
    members = 1 + len(answers)
    bar = max(own - SLACK, FLOOR)
    silent = 1 + sum(1 for s in answers.values() if s is not None and s >= bar)
    heard = any(s is not None and s < bar for s in answers.values())
    assert (got.agreement is Agreement.AGREED) == (2 * silent > members and not heard)
    assert (got.agreement is Agreement.HEARD_ELSEWHERE) == heard
    assert got.needed == members // 2 + 1


def test_peers_that_stopped_hearing_it_later_than_the_owner_still_agree() -> None:
    """The owner's own path failed first (it has not heard it for 3 s), then the host
    died: the peers' shorter silence is past the suspicion bar, and counts."""
    assert decide(OWN, {"b": 0.7, "c": 0.7}, SLACK, FLOOR).agreement is Agreement.AGREED


def test_a_young_detectors_short_suspicion_needs_the_peers_silent_past_the_floor() -> None:
    """A detector that has learned little suspects after 70 ms: peers that heard the
    host 45 ms ago do not agree; peers silent past the floor do."""
    young = 0.07
    assert decide(young, {"b": 0.045, "c": 0.046}, SLACK, FLOOR).agreement is (
        Agreement.HEARD_ELSEWHERE
    )
    assert decide(young, {"b": 0.2, "c": 0.16}, SLACK, FLOOR).agreement is Agreement.AGREED


def test_a_peer_that_never_heard_it_is_evidence_json_can_hold() -> None:
    import json

    d = decide(OWN, {"ctl-2": float("inf"), "ctl-3": None, "ctl-4": 0.61234}, SLACK, FLOOR)
    said = json.loads(json.dumps(d.as_evidence(), allow_nan=False))
    assert said["peers"] == {"ctl-2": "never heard it", "ctl-3": None, "ctl-4": 0.612}

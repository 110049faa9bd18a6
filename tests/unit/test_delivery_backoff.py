"""Retry waits: exponential, capped, with equal jitter."""

from __future__ import annotations

import random

from medevac.notifier.delivery import backoff, trips_breaker


def test_retry_waits_double_up_to_their_cap_with_half_of_each_jittered() -> None:
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0), (100, 10.0)]:
        assert backoff(attempt, 0.5, 10.0, lambda: 0.0) == ceiling / 2
        assert backoff(attempt, 0.5, 10.0, lambda: 1.0) == ceiling


def test_deliveries_failed_together_do_not_retry_together() -> None:
    rand = random.Random(7).random
    waits = [backoff(4, 0.5, 10.0, rand) for _ in range(50)]
    assert all(2.0 <= w <= 4.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 40


def test_only_a_consumer_that_cannot_take_requests_counts_against_its_circuit() -> None:
    assert trips_breaker(None)  # no answer
    assert all(trips_breaker(s) for s in (500, 502, 503, 504, 408, 429))
    assert not any(trips_breaker(s) for s in (301, 400, 401, 403, 404, 410))

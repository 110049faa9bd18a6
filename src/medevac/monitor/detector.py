"""Phi-accrual failure detection over heartbeat arrivals (Hayashibara et al., 2004).

Each host's detector learns the distribution of the gaps between its heartbeats
(a sliding window) and says how unlikely the current silence is: phi = -log10 of the
probability that a heartbeat arrives this late. phi 8 means "one chance in 10^8".

With datagram loss p, the learned distribution already contains the occasional
doubled gap; a silence long enough to pass the threshold is then mostly a run of
consecutive losses. The agent sends every heartbeat ``copies`` times, which turns a
per-interval loss p into p**copies, and suspicion is never a verdict on its own: it
is confirmed by direct probes and the BMC (see ``monitor.hosts``).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class PhiAccrualDetector:
    """One host's detector; times are monotonic seconds. Pure: no clock of its own."""

    expected_interval: float
    window: int = 200
    # Floor of the learned deviation, as a share of the interval: a very regular sender
    # must not make the detector fire on the first small delay (20 ms at 100 ms).
    min_std_ratio: float = 0.2
    acceptable_pause: float = 0.0
    max_learned_gap: float = 5.0  # in expected intervals
    min_learned_gap: float = 0.5  # in expected intervals
    _gaps: deque[float] = field(init=False)
    _sum: float = field(init=False, default=0.0)
    _sq_sum: float = field(init=False, default=0.0)
    last_arrival: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.expected_interval <= 0:
            raise ValueError("expected_interval must be positive")
        self._gaps = deque()
        # Bootstrap with two pseudo-gaps around the expected interval, so the first
        # real heartbeats start from a sane distribution (as Akka does).
        for gap in (self.expected_interval * 0.75, self.expected_interval * 1.25):
            self._push(gap)

    def _push(self, gap: float) -> None:
        self._gaps.append(gap)
        self._sum += gap
        self._sq_sum += gap * gap
        if len(self._gaps) > self.window:
            old = self._gaps.popleft()
            self._sum -= old
            self._sq_sum -= old * old

    def heartbeat(self, now: float) -> None:
        if self.last_arrival is not None:
            gap = now - self.last_arrival
            # A silence of many intervals is an outage, not the network's jitter: learning
            # it would make the detector blind to the next one for a whole window. A gap
            # far shorter than the sender's fixed interval is a queue draining (ours, after
            # a stall, or the network's): the delay that built the queue was already seen
            # as one long gap (learned, or ignored as an outage), and learning the burst
            # too would halve the mean and inflate the deviation (the next fault then
            # waits for a wide threshold).
            interval = self.expected_interval
            if self.min_learned_gap * interval <= gap <= self.max_learned_gap * interval:
                self._push(gap)
        self.last_arrival = now

    @property
    def mean(self) -> float:
        return self._sum / len(self._gaps)

    @property
    def std(self) -> float:
        n = len(self._gaps)
        variance = max(0.0, self._sq_sum / n - self.mean**2)
        return max(self.min_std_ratio * self.expected_interval, math.sqrt(variance))

    def phi(self, now: float) -> float:
        """How unlikely the silence since the last heartbeat is (0 when none yet)."""
        if self.last_arrival is None:
            return 0.0
        return phi(now - self.last_arrival, self.mean + self.acceptable_pause, self.std)

    def silence(self, now: float) -> float:
        return 0.0 if self.last_arrival is None else now - self.last_arrival

    def time_to_threshold(self, threshold: float) -> float:
        """The silence (s) after a heartbeat at which phi reaches ``threshold``: O(1)."""
        return self.mean + self.acceptable_pause + threshold_z(threshold) * self.std

    def suspect_at(self, threshold: float) -> float | None:
        """The time at which phi will reach ``threshold`` unless a heartbeat comes first."""
        if self.last_arrival is None:
            return None
        return self.last_arrival + self.time_to_threshold(threshold)


@functools.cache
def threshold_z(threshold: float) -> float:
    """The standard score at which phi equals ``threshold`` (the same for every host)."""
    lo, hi = 0.0, 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if phi(mid, 0.0, 1.0) >= threshold:
            hi = mid
        else:
            lo = mid
    return hi


def phi(elapsed: float, mean: float, std: float) -> float:
    """-log10 P(gap > elapsed) for a normal(mean, std) gap, via a logistic fit of its CDF."""
    y = (elapsed - mean) / std
    e = math.exp(-y * (1.5976 + 0.070566 * y * y)) if y > -30 else math.inf
    if elapsed > mean:
        # P(gap > elapsed) = e / (1 + e); written to keep precision for large y.
        return -math.log10(e / (1.0 + e)) if e > 0 else math.inf
    return -math.log10(1.0 - 1.0 / (1.0 + e))

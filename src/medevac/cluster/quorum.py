"""Quorum before a verdict: a host is judged lost only when a majority of the live
controllers agree that it is silent, and none of those that answered still hears it.

Every controller hears every host, so when the owner finds a host silent it asks the
others how long they have not heard it. A peer that heard it recently shows the
silence is not the host's (the owner's network, a burst of loss on some links), and
no verdict is given, even when a majority is silent: a dead host is silent to every
controller at once, so the veto costs a real failure nothing, while a lossy link
silent on two controllers at once would otherwise fence a live host; an owner
that cannot get answers from enough peers to make a majority is the one cut off, and
gives none either. The question goes out with the confirmation's probes, so the
answers are in before the probes' wait ends: agreement adds no wait of its own.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)


class Agreement(enum.StrEnum):
    AGREED = "agreed"  # a majority of the live controllers finds it silent, none hears it
    HEARD_ELSEWHERE = "heard-elsewhere"  # a peer still hears it: the silence is not the host's
    NO_MAJORITY = "no-majority"  # too few peers answered: this controller is cut off


@dataclass(frozen=True)
class Decision:
    agreement: Agreement
    silent: int  # controllers that find it silent, this one included
    needed: int  # a majority of the live controllers
    answers: Mapping[str, float | None]  # peer -> its silence (s); None: no answer

    def as_evidence(self) -> dict[str, Any]:
        return {
            "agreement": self.agreement.value,
            "silent": self.silent,
            "needed": self.needed,
            "peers": {p: _said(s) for p, s in self.answers.items()},
        }


def _said(silence: float | None) -> float | str | None:
    """A peer's answer as evidence (JSON has no infinity)."""
    if silence is None:
        return None
    return "never heard it" if math.isinf(silence) else round(silence, 3)


def decide(
    suspect_after: float, answers: Mapping[str, float | None], slack: float, floor: float
) -> Decision:
    """Whether a majority of the live controllers (this one, which found the host
    silent, and ``answers``' peers) finds the host silent, with no peer still hearing
    it (one that does vetoes the verdict). A peer agrees when it has not
    heard the host for at least ``suspect_after`` (the silence this one suspects it
    at) less ``slack`` (heartbeats reach controllers a little apart), and never less
    than ``floor`` (a young detector suspects after very little: a peer that heard the
    host within its rhythm does not agree); a peer that never heard it agrees; one
    that did not answer counts for neither."""
    members = 1 + len(answers)
    needed = members // 2 + 1
    bar = max(suspect_after - slack, floor)
    silent = 1 + sum(1 for s in answers.values() if s is not None and s >= bar)
    heard = sum(1 for s in answers.values() if s is not None and s < bar)
    if heard:
        return Decision(Agreement.HEARD_ELSEWHERE, silent, needed, answers)
    if silent >= needed:
        return Decision(Agreement.AGREED, silent, needed, answers)
    return Decision(Agreement.NO_MAJORITY, silent, needed, answers)


class PeerQuorum:
    """Asks the other live controllers (their API, with ``token``) how long they have
    not heard a host."""

    def __init__(
        self,
        member_id: str,
        peers: Callable[[], Mapping[str, str]],  # member -> API URL, the live ones
        token: str,
        *,
        timeout: float,
        slack: float,
        floor: float,
    ) -> None:
        self.member_id = member_id
        self.peers = peers
        self.token = token
        self.timeout = timeout
        self.slack = slack
        self.floor = floor
        self.asked = 0
        self.refused: dict[Agreement, int] = {a: 0 for a in Agreement}
        self._http: httpx.AsyncClient | None = None

    async def ask(self, host: str) -> dict[str, float | None]:
        """Every live peer's silence on ``host`` (None: it did not answer in time)."""
        peers = {m: url for m, url in self.peers().items() if m != self.member_id}
        if not peers:
            return {}
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.timeout, headers={"X-Auth-Token": self.token}, trust_env=False
            )
        self.asked += 1
        got = await asyncio.gather(*(self._one(url, host) for url in peers.values()))
        return dict(zip(peers, got, strict=True))

    async def _one(self, url: str, host: str) -> float | None:
        assert self._http is not None
        try:
            r = await self._http.get(f"{url.rstrip('/')}/v1/cluster/silence", params={"host": host})
            r.raise_for_status()
            silence = r.json()["silence_s"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("peer %s did not say how long %s is silent: %s", url, host, exc)
            return None
        return float("inf") if silence is None else float(silence)

    def decide(self, suspect_after: float, answers: Mapping[str, float | None]) -> Decision:
        decision = decide(suspect_after, answers, self.slack, self.floor)
        if decision.agreement is not Agreement.AGREED:
            self.refused[decision.agreement] += 1
        return decision

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

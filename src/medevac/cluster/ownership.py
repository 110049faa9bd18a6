"""Which hosts this controller owns, and the fencing of every effect on them.

``SoleController`` is the embedded default: one controller owns every host and
nothing is checked. ``SharedOwnership`` follows the coordination group: each view of
the live members gives this controller its hosts (``ring.owner_of``); a host gained is
claimed in the store under a new epoch before anything is done to it, a host lost is
dropped at once. Every effect on a host is authorized by ``authorize``, which records
it in the store only under the epoch this controller claimed: a controller that was
replaced (paused, cut off, slow) is refused, counts it and says so in the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from medevac.cluster.membership import ClusterView
from medevac.cluster.ring import owner_of
from medevac.storage.records import Fence, HostStore, StaleOwner

log = logging.getLogger(__name__)


NOT_OWNER = "does not own"  # in NotOwner's message: clients try another controller


class NotOwner(Exception):
    """An effect asked of a controller that does not own the host (any more)."""

    def __init__(self, member_id: str, host: str) -> None:
        self.member_id, self.host = member_id, host
        super().__init__(f"{member_id} {NOT_OWNER} {host}: its owner acts on it")


class Ownership(Protocol):
    """What the blocks ask before they act on a host."""

    member_id: str

    def holds(self, host: str) -> bool:
        """Whether this controller owns ``host`` now (in memory: for the hot paths)."""
        ...

    def epoch_of(self, host: str) -> int | None:
        """The epoch under which this controller holds ``host`` (None: not its own)."""
        ...

    async def authorize(
        self,
        host: str,
        effect: str,
        detail: dict[str, Any],
        trace_id: str | None,
        write: Callable[[Fence | None], None] | None = None,
    ) -> bool:
        """Record ``effect`` on ``host`` under this controller's epoch; False: it does
        not own the host (any more), or the store did not answer, and it must not act.
        ``write`` (run in a thread) records the caller's own rows through the fence it
        is given, in the same transaction as the check (None: nothing to check)."""
        ...


class SoleController:
    """One controller: every host is its own, under no epoch."""

    member_id = "local"

    def holds(self, host: str) -> bool:
        return True

    def epoch_of(self, host: str) -> int | None:
        return 0

    async def authorize(
        self,
        host: str,
        effect: str,
        detail: dict[str, Any],
        trace_id: str | None,
        write: Callable[[Fence | None], None] | None = None,
    ) -> bool:
        if write is not None:
            await asyncio.to_thread(write, None)
        return True


class SharedOwnership:
    """This controller's share of the hosts among the live members."""

    def __init__(
        self,
        member_id: str,
        hosts: dict[str, str],  # name -> zone
        store: HostStore,
        lease_valid: Callable[[], bool],
        *,
        on_gained: Callable[[set[str]], None] | None = None,
        on_lost: Callable[[set[str]], None] | None = None,
        on_isolated: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.member_id = member_id
        self.hosts = hosts
        self.store = store
        self.lease_valid = lease_valid
        self.on_gained = on_gained
        self.on_lost = on_lost
        self.on_isolated = on_isolated
        self.clock = clock
        self.held: dict[str, int] = {}  # host -> the epoch this controller claimed
        self.members: frozenset[str] = frozenset()
        self.isolated = False
        self.refused = 0  # effects refused: not the owner, or a stale epoch
        self.claims = 0
        self.changes: list[dict[str, Any]] = []  # recent ownership changes, newest last
        self._latest: ClusterView | None = None
        self._applying: asyncio.Task[None] | None = None
        self.settled = asyncio.Event()  # the latest view is applied

    # -- following the membership ---------------------------------------------------

    def on_view(self, view: ClusterView) -> None:
        """A new view of the members (on the loop): applied in order, latest wins."""
        self._latest = view
        self.settled.clear()
        if self._applying is None or self._applying.done():
            self._applying = asyncio.ensure_future(self._apply_latest())

    async def _apply_latest(self) -> None:
        while self._latest is not None:
            view, self._latest = self._latest, None
            try:
                await self._apply(view)
            except Exception:  # the store away: the next view (or beat) tries again
                log.exception("could not apply the controllers' view %s", sorted(view.members))
        self.settled.set()

    async def _apply(self, view: ClusterView) -> None:
        if view.isolated != self.isolated:
            self.isolated = view.isolated
            if view.isolated:
                log.critical(
                    "%s cannot reach the coordination backend: it acts on no host until it can",
                    self.member_id,
                )
            if self.on_isolated is not None:
                self.on_isolated(view.isolated)
        self.members = view.members
        mine = set() if view.isolated else self.share(view.members)
        self._drop(set(self.held) - mine)
        # Views differ between members for a moment: another one may have claimed a
        # host this one still holds (it never saw a view where the host was not its
        # own). What the store says wins: such a host is claimed again.
        stored = await asyncio.to_thread(self.store.epochs_of, self.member_id)
        # What it knew of those may be old: they are dropped, and taken afresh below.
        self._drop({h for h in mine & set(self.held) if stored.get(h) != self.held[h]})
        wanted = {h: self.hosts[h] for h in mine - set(self.held)}
        gained: set[str] = set()
        if wanted:
            epochs = await asyncio.to_thread(
                self.store.claim_many, wanted, self.member_id, self.clock()
            )
            self.held.update(epochs)
            self.claims += len(epochs)
            gained = set(epochs)
        if gained:
            self._changed("gained", gained)
            if self.on_gained is not None:
                self.on_gained(gained)

    async def keep_checking(
        self,
        every: float,
        view: Callable[[], ClusterView],
        apply: Callable[[ClusterView], None] | None = None,
    ) -> None:
        """Apply the current view again every ``every`` s (through ``apply``, default
        ``on_view``): a claim another member made on a view this one never saw is found
        and answered within that time."""
        while True:
            await asyncio.sleep(every)
            if self._applying is None or self._applying.done():
                (apply or self.on_view)(view())

    def _drop(self, hosts: set[str]) -> None:
        """No longer this controller's: forgotten first, so nothing more is done to them."""
        if not hosts:
            return
        for host in hosts:
            del self.held[host]
        self._changed("lost", hosts)
        if self.on_lost is not None:
            self.on_lost(hosts)

    def share(self, members: Iterable[str]) -> set[str]:
        live = list(members)
        return {h for h in self.hosts if owner_of(h, live) == self.member_id}

    def _changed(self, what: str, hosts: set[str]) -> None:
        log.info("%s %s %d hosts: %s", self.member_id, what, len(hosts), ", ".join(sorted(hosts)))
        self.changes.append(
            {"at": self.clock(), what: sorted(hosts), "members": sorted(self.members)}
        )
        del self.changes[:-50]

    # -- acting ----------------------------------------------------------------------

    def holds(self, host: str) -> bool:
        return host in self.held and self.lease_valid()

    def epoch_of(self, host: str) -> int | None:
        return self.held.get(host)

    async def authorize(
        self,
        host: str,
        effect: str,
        detail: dict[str, Any],
        trace_id: str | None,
        write: Callable[[Fence | None], None] | None = None,
    ) -> bool:
        epoch = self.held.get(host)
        if epoch is None or not self.lease_valid():
            self.refused += 1
            why = "not its host" if epoch is None else "its lease ran out"
            log.warning("%s refused %s on %s: %s", self.member_id, effect, host, why)
            return False
        fence = Fence(host, self.member_id, epoch, effect, detail, trace_id, self.clock())
        try:
            await asyncio.to_thread(write or self.store.record_effect, fence)
        except StaleOwner as exc:
            self.refused += 1
            log.error("refused %s: %s", effect, exc)
            if self.held.get(host) == epoch:
                self._drop({host})
                self.on_view(ClusterView(self.members, isolated=self.isolated))  # look again
            return False
        except Exception as exc:  # no record, no effect: the store decides who owns
            self.refused += 1
            log.error("%s on %s not authorized, the store did not answer: %s", effect, host, exc)
            return False
        return self.lease_valid()  # the lease may have run out while the store answered

    def status(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "members": sorted(self.members),
            "isolated": self.isolated,
            "lease_valid": self.lease_valid(),
            "hosts": {h: self.held[h] for h in sorted(self.held)},
            "claims": self.claims,
            "refused": self.refused,
            "changes": self.changes[-10:],
        }

"""Which host group a host is recovered under: Masakari segments over the configured groups.

A host listed in an enabled segment is recovered under that segment's
``recovery_method``, with the segment's reserved hosts that are not on maintenance as
its reserved hosts; everything a segment does not define (level, concurrency,
evacuate_all, ...) comes from the configured group the host would fall in without it.
Hosts in no enabled segment keep their configured group: the configuration is the
seed and the fallback.

``resolve_group`` is the pure decision; ``GroupResolver`` keeps the segments read
from the store, fresh to within ``ttl`` seconds (several controllers share the
database) and at once after a write through this process's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from medevac.recovery.policy import HostGroup, RecoveryMethod, group_of
from medevac.storage.db import Database
from medevac.storage.segments import (
    SegmentHostRow,
    SegmentRow,
    SegmentStore,
    generation,
    policies,
)

log = logging.getLogger(__name__)

SEGMENTS_CACHE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    """What a segment decides of its hosts' recovery."""

    name: str
    recovery_method: RecoveryMethod
    enabled: bool
    hosts: tuple[str, ...]
    reserved_hosts: tuple[str, ...]  # reserved and not on maintenance, in the segment's order


def segment_group(segment: SegmentPolicy, base: HostGroup) -> HostGroup:
    """``base`` (the configured group) with the segment's hosts, method and reserved hosts."""
    return replace(
        base,
        name=f"segment:{segment.name}",
        hosts=segment.hosts,
        recovery_method=segment.recovery_method,
        reserved_hosts=segment.reserved_hosts,
    )


def resolve_group(
    host: str, segments: Sequence[SegmentPolicy], configured: Sequence[HostGroup]
) -> HostGroup:
    """The group ``host`` is recovered under: its enabled segment's (the oldest, should
    a name be in two), else the first configured group matching it, else the default."""
    base = group_of(host, configured)
    for segment in segments:
        if segment.enabled and host in segment.hosts:
            return segment_group(segment, base)
    return base


class GroupResolver:
    """Host groups as ``resolve_group`` decides them, over segments that ``load`` reads
    (blocking, run in a thread); ``changed`` says whether a write in this process may
    have changed them since the last read. Without ``load``, the configured groups only."""

    def __init__(
        self,
        configured: Sequence[HostGroup],
        load: Callable[[], Sequence[SegmentPolicy]] | None = None,
        *,
        changed: Callable[[], object] = lambda: 0,
        ttl: float = SEGMENTS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = tuple(configured)
        self.load = load
        self.changed = changed
        self.ttl = ttl
        self.clock = clock
        self.segments: tuple[SegmentPolicy, ...] = ()
        self._read_at: float | None = None
        self._read_mark: object = None
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def stale(self) -> bool:
        if self.load is None:
            return False
        if self._read_at is None or self.changed() != self._read_mark:
            return True
        return self.clock() - self._read_at >= self.ttl

    def group_of(self, host: str) -> HostGroup:
        """The host's group from the segments last read; when they are stale, a read
        is started in the background (a caller that cannot wait: see ``fresh``)."""
        if self.stale:
            with contextlib.suppress(RuntimeError):  # no running loop: the next call
                self._start_refresh()
        return resolve_group(host, self.segments, self.configured)

    async def fresh(self, host: str) -> HostGroup:
        """The host's group from segments read at most ``ttl`` ago (or since the last
        write of this process)."""
        if self.stale:
            await self.refresh()
        return resolve_group(host, self.segments, self.configured)

    async def refresh(self) -> None:
        """Read the segments again (one read at a time; a failed read keeps the last)."""
        if self.load is None:
            return
        await asyncio.shield(self._start_refresh())

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._read())
        return self._refreshing

    async def _read(self) -> None:
        assert self.load is not None
        mark, at = self.changed(), self.clock()
        try:
            segments = await asyncio.to_thread(self.load)
        except Exception as exc:  # the store is down: the last segments read still hold
            log.warning("cannot read the segments (%s); keeping the last read", type(exc).__name__)
            return
        self.segments, self._read_at, self._read_mark = tuple(segments), at, mark


def policy_of(segment: SegmentRow, hosts: Sequence[SegmentHostRow]) -> SegmentPolicy:
    """A stored segment and its hosts as the policy they make."""
    return SegmentPolicy(
        name=segment.name,
        recovery_method=RecoveryMethod(segment.recovery_method),
        enabled=segment.enabled,
        hosts=tuple(h.name for h in hosts),
        reserved_hosts=tuple(h.name for h in hosts if h.reserved and not h.on_maintenance),
    )


def stored_groups(configured: Sequence[HostGroup], db: Database) -> GroupResolver:
    """A resolver over the segments in ``db``, above ``configured``."""
    store = SegmentStore(db)

    def load() -> list[SegmentPolicy]:
        return [policy_of(segment, hosts) for segment, hosts in policies(store)]

    return GroupResolver(configured, load, changed=lambda: generation(db))

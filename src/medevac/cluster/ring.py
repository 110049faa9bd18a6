"""Which live controller owns each host: rendezvous (highest random weight) hashing.

Every member computes the same answer from the same membership, with no coordination.
When a member leaves, only its hosts move (each to its next-highest member); when one
joins, only the hosts it now ranks first for move to it: the least movement possible.
Unlike a ring of virtual nodes it stays even with three members.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(member: str, host: str) -> int:
    digest = hashlib.blake2b(f"{member}\0{host}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(host: str, members: Iterable[str]) -> str | None:
    """The member that owns ``host`` (None when there is no member)."""
    return max(members, key=lambda m: (_weight(m, host), m), default=None)


def shares(hosts: Iterable[str], members: Iterable[str]) -> dict[str, set[str]]:
    """Each member's hosts."""
    live = sorted(set(members))
    out: dict[str, set[str]] = {m: set() for m in live}
    for host in hosts:
        owner = owner_of(host, live)
        if owner is not None:
            out[owner].add(host)
    return out

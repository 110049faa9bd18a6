"""The hosts' owners: one per host, even shares, and the least movement on a change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevac.cluster.ring import owner_of, shares

HOSTS = [f"compute-{i}" for i in range(3000)]
names = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=12)


@given(st.sets(names, min_size=1, max_size=7))
def test_every_host_has_exactly_one_owner_among_the_members(members: set[str]) -> None:
    got = shares(HOSTS[:200], members)
    assert set(got) == members
    assert sorted(h for hs in got.values() for h in hs) == sorted(HOSTS[:200])


def test_the_order_members_are_listed_in_does_not_matter() -> None:
    assert all(owner_of(h, ["a", "b", "c"]) == owner_of(h, ["c", "a", "b"]) for h in HOSTS)


def test_no_member_no_owner() -> None:
    assert owner_of("compute-1", []) is None


@given(st.sets(names, min_size=2, max_size=7), st.data())
def test_a_member_leaving_moves_only_its_own_hosts(members: set[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before = {h: owner_of(h, members) for h in HOSTS[:300]}
    after = {h: owner_of(h, members - {gone}) for h in HOSTS[:300]}
    moved = {h for h in before if before[h] != after[h]}
    assert moved == {h for h, owner in before.items() if owner == gone}


@given(st.sets(names, min_size=1, max_size=6), names)
def test_a_member_joining_takes_hosts_only_for_itself(members: set[str], new: str) -> None:
    before = {h: owner_of(h, members) for h in HOSTS[:300]}
    after = {h: owner_of(h, members | {new}) for h in HOSTS[:300]}
    assert all(after[h] == new for h in before if before[h] != after[h])


def test_three_members_share_the_hosts_evenly() -> None:
    sizes = [len(s) for s in shares(HOSTS, ["ctl-1", "ctl-2", "ctl-3"]).values()]
    assert min(sizes) > 0.9 * len(HOSTS) / 3 and max(sizes) < 1.1 * len(HOSTS) / 3, sizes

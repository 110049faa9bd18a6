"""Each host's owner and epoch in the store, on SQLite and PostgreSQL: a claim raises
the epoch; an effect is recorded only under the current epoch, and a stale owner's is
refused, recorded as refused, and raised."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from medevac.storage import Database
from medevac.storage.records import Fence, HostRow, HostStore, StaleOwner


def effect(store: HostStore, owner: str, epoch: int, what: str = "force_down") -> None:
    store.record_effect(Fence("h1", owner, epoch, what, {"n": 1}, "t1", 5.0))


def test_a_claim_raises_the_epoch_and_is_audited(fresh_db: Database) -> None:
    fresh_db.migrate()
    store = HostStore(fresh_db)
    assert store.claim("h1", "z", "ctl-1", 1.0) == 1
    assert store.claim("h1", "z", "ctl-2", 2.0) == 2
    row = store.get("h1")
    assert row is not None and (row.owner, row.epoch, row.state) == ("ctl-2", 2, "UP")
    assert store.epochs_of("ctl-2") == {"h1": 2} and store.epochs_of("ctl-1") == {}
    moves = [(e.detail["from"], e.detail["to"]) for e in reversed(fresh_db.audit_events("h1"))]
    assert moves == [(None, "ctl-1"), ("ctl-1", "ctl-2")]


def test_only_the_current_epoch_records_an_effect(fresh_db: Database) -> None:
    fresh_db.migrate()
    store = HostStore(fresh_db)
    first = store.claim("h1", "z", "ctl-1", 1.0)
    effect(store, "ctl-1", first)
    second = store.claim("h1", "z", "ctl-2", 2.0)
    with pytest.raises(StaleOwner) as refused:
        effect(store, "ctl-1", first, "evacuate")
    assert refused.value.current == ("ctl-2", second)
    # The same controller back under its old epoch is stale too.
    store.claim("h1", "z", "ctl-1", 3.0)
    with pytest.raises(StaleOwner):
        effect(store, "ctl-1", first)
    kinds = [e.kind for e in reversed(fresh_db.audit_events("h1"))]
    assert kinds.count("host.force_down") == 1
    assert kinds.count("host.stale_owner") == 2
    stale = fresh_db.audit_events("h1")[0]
    assert stale.detail["refused"] == "force_down" and stale.detail["owner_now"] == "ctl-1"


def test_a_recovery_is_recorded_only_under_the_current_epoch(fresh_db: Database) -> None:
    """The recovery's own rows are written in the transaction that checks the epoch:
    a replaced owner's write leaves the new owner's record untouched."""
    from medevac.storage.records import RecoveryStore

    fresh_db.migrate()
    hosts, recoveries = HostStore(fresh_db), RecoveryStore(fresh_db)
    first = hosts.claim("h1", "z", "ctl-1", 1.0)

    def fence(owner: str, epoch: int, what: str) -> Fence:
        return Fence("h1", owner, epoch, what, {}, None, 2.0)

    recoveries.put("r1", "i1", "h1", 1, "FENCING", 2.0, {}, fence=fence("ctl-1", first, "a"))
    recoveries.put_evacuation(
        "r1", "s1", "vm", "h1", result="running", at=2.0, fence=fence("ctl-1", first, "b")
    )
    second = hosts.claim("h1", "z", "ctl-2", 3.0)
    recoveries.put("r1", "i1", "h1", 1, "EVACUATING", 4.0, {}, fence=fence("ctl-2", second, "c"))
    with pytest.raises(StaleOwner):
        recoveries.put(
            "r1", "i1", "h1", 1, "FAILED", 5.0, {"x": 1}, True, fence=fence("ctl-1", first, "d")
        )
    with pytest.raises(StaleOwner):
        recoveries.put_evacuation(
            "r1",
            "s1",
            "vm",
            "h1",
            result="failed",
            at=5.0,
            ended=True,
            fence=fence("ctl-1", first, "e"),
        )
    rec = recoveries.get("r1")
    assert rec is not None and rec["state"] == "EVACUATING" and rec["ended_at"] is None, rec
    assert [e["result"] for e in rec["evacuations"]] == ["running"], rec
    kinds = [(e.kind, e.actor) for e in reversed(fresh_db.audit_events("h1"))]
    assert [k for k in kinds if k[0] != "host.owner"] == [
        ("host.a", "ctl-1"),
        ("host.b", "ctl-1"),
        ("host.c", "ctl-2"),
        ("host.stale_owner", "ctl-1"),
        ("host.stale_owner", "ctl-1"),
    ]


def test_an_unknown_host_has_no_owner(fresh_db: Database) -> None:
    fresh_db.migrate()
    with pytest.raises(StaleOwner):
        effect(HostStore(fresh_db), "ctl-1", 1)


def test_concurrent_claims_each_get_their_own_epoch(fresh_db: Database) -> None:
    fresh_db.migrate()
    store = HostStore(fresh_db)
    store.claim("h1", "z", "ctl-0", 0.5)
    with ThreadPoolExecutor(8) as pool:
        epochs = list(pool.map(lambda i: store.claim("h1", "z", f"ctl-{i}", 1.0), range(1, 25)))
    assert sorted(epochs) == list(range(2, 26))
    row = store.get("h1")
    assert row is not None and row.epoch == 25


def test_a_claimed_host_moves_through_its_lifecycle(fresh_db: Database) -> None:
    """A claim makes the row at generation 0; the first state move takes it to 1."""
    fresh_db.migrate()
    store = HostStore(fresh_db)
    store.claim("h1", "z", "ctl-1", 1.0)
    audit = {"audit_kind": "host.state", "actor": "inspector", "trace_id": "t"}
    assert store.move(HostRow("h1", "z", "LOST", 2.0, 1), detail={}, **audit)
    row = store.get("h1")
    assert row is not None and (row.state, row.generation, row.owner, row.epoch) == (
        "LOST",
        1,
        "ctl-1",
        1,
    )


def test_a_gone_controllers_pending_deliveries_are_adopted_once(fresh_db: Database) -> None:
    from medevac.storage.records import AlarmStore, DeliveryRow, OutboxStore

    fresh_db.migrate()
    alarms, outbox = AlarmStore(fresh_db), OutboxStore(fresh_db)
    rows = [
        DeliveryRow(f"d{i}", f"a{i}", "http://c/x", {}, float(i), owner=owner)
        for i, owner in enumerate(["ctl-1", "ctl-1", "ctl-2", None])
    ]
    alarms.record_firing((), (), rows)
    outbox.settle([("d1", "delivered", 1, 3.0, None)])
    assert [r.id for r in outbox.pending("ctl-1")] == ["d0"]  # its own, still pending
    orphans = outbox.orphans({"ctl-2", "ctl-3"})
    assert sorted(r.id for r in orphans) == ["d0", "d3"]  # ctl-1 is gone; d3 had no owner
    taken = outbox.adopt(orphans, "ctl-3")
    assert sorted((r.id, r.owner) for r in taken) == [("d0", "ctl-3"), ("d3", "ctl-3")]
    assert outbox.adopt(orphans, "ctl-2") == []  # already taken: never sent by two
    assert sorted(r.id for r in outbox.pending("ctl-3")) == ["d0", "d3"]


def test_many_hosts_are_claimed_in_chunks_and_two_claimers_never_deadlock(
    fresh_db: Database,
) -> None:
    fresh_db.migrate()
    store = HostStore(fresh_db)
    hosts = {f"h{i:04d}": "z" for i in range(1200)}  # three chunks of 500 at most
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda who: store.claim_many(hosts, who, 1.0), ["c1", "c2"])
    assert set(first) == set(second) == set(hosts)
    rows = {r.name: r for r in store.all()}
    assert all(r.epoch == 2 for r in rows.values())  # each claimed once by each
    assert all(rows[h].owner == ("c1" if first[h] == 2 else "c2") for h in hosts)
    assert all({first[h], second[h]} == {1, 2} for h in hosts)

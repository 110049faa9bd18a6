"""Planned maintenance's decisions: who moves and in what order, when the migrations
start, how one migration is judged from one read, how the maintenance ends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevac.recovery.maintenance_plan import (
    ENDABLE,
    Answer,
    Disposition,
    HostServer,
    MaintenanceState,
    Migration,
    answerable,
    disposition,
    judge_migration,
    may_migrate,
    outcome,
    plan,
)
from medevac.recovery.policy import HostGroup

HA = {"HA_Enabled": "True"}
GROUP = HostGroup()


def server(
    sid: str, metadata: dict[str, str] | None = None, vm_state: str = "active", name: str = ""
) -> HostServer:
    return HostServer(sid, name or sid, "p1", vm_state, metadata or {})


def test_ha_servers_move_and_the_others_stay_unless_the_group_moves_all() -> None:
    assert disposition(server("a", HA), GROUP, None)[0] is Disposition.MIGRATE
    assert disposition(server("b"), GROUP, None) == (
        Disposition.LEAVE,
        "not HA: the host group leaves such servers",
    )
    every = HostGroup(maintenance_migrate_all=True)
    assert disposition(server("b"), every, None)[0] is Disposition.MIGRATE
    # A server's own action counts as HA; "none" does not.
    assert disposition(server("c", {"medevac:action": "restart"}), GROUP, None)[0] is (
        Disposition.MIGRATE
    )
    assert disposition(server("d", {**HA, "medevac:action": "none"}), GROUP, None)[0] is (
        Disposition.LEAVE
    )
    # The failure policy's evacuate_all is not the maintenance's.
    assert disposition(server("e"), HostGroup(evacuate_all=True), None)[0] is Disposition.LEAVE


def test_an_owner_asking_to_be_left_always_wins() -> None:
    every = HostGroup(maintenance_migrate_all=True)
    what, why = disposition(server("a", HA), every, Answer.LEAVE)
    assert what is Disposition.LEAVE and "owner" in why
    assert disposition(server("a", HA), every, Answer.ACK)[0] is Disposition.MIGRATE


def test_only_a_running_or_paused_server_is_live_migrated() -> None:
    assert disposition(server("a", HA, "paused"), GROUP, None)[0] is Disposition.MIGRATE
    for state in ("stopped", "error", "suspended", ""):
        what, why = disposition(server("a", HA, state), GROUP, None)
        assert what is Disposition.LEAVE and "only a running server moves" in why


def test_the_plan_goes_by_priority_then_name_and_says_why_each_stays() -> None:
    servers = [
        server("s1", HA, name="b"),
        server("s2", {**HA, "medevac:priority": "5"}, name="z"),
        server("s3", HA, name="a"),
        server("s4", name="plain"),
        server("s5", HA, name="c"),
        server("s6", {**HA, "medevac:priority": "x"}, name="d"),
    ]
    moving, left = plan(servers, {"s5": Answer.LEAVE, "s1": Answer.ACK}, GROUP)
    assert [s.id for s in moving] == ["s2", "s3", "s1", "s6"]
    assert sorted(left) == ["s4", "s5"]


def test_migrations_start_at_the_deadline_or_once_every_owner_answered() -> None:
    assert may_migrate(10.0, None, ["a"], set())  # no deadline: at once
    assert not may_migrate(10.0, 20.0, ["a", "b"], {"a"})
    assert may_migrate(10.0, 20.0, ["a", "b"], {"a", "b"})
    assert may_migrate(20.0, 20.0, ["a", "b"], set())
    assert may_migrate(10.0, 20.0, [], set())  # an empty host: nobody to wait for


@given(
    st.floats(0, 100),
    st.one_of(st.none(), st.floats(0, 100)),
    st.sets(st.sampled_from("abcd")),
    st.sets(st.sampled_from("abcd")),
)
def test_nothing_moves_before_the_deadline_while_an_owner_is_silent(
    now: float, deadline: float | None, servers: set[str], answered: set[str]
) -> None:
    if deadline is not None and now < deadline and not servers <= answered:
        assert not may_migrate(now, deadline, servers, answered)


def test_one_read_judges_a_live_migration() -> None:
    assert judge_migration("h1", "MIGRATING", "migrating", "h1") is Migration.WAIT
    assert judge_migration("h2", "ACTIVE", "migrating", "h1") is Migration.WAIT
    assert judge_migration("h2", "ACTIVE", None, "h1") is Migration.ARRIVED
    assert judge_migration("h2", "PAUSED", None, "h1") is Migration.ARRIVED
    assert judge_migration("h2", "ERROR", None, "h1") is Migration.FAILED
    # Nova sets the task before it answers: none on the source means it went back.
    assert judge_migration("h1", "ACTIVE", None, "h1") is Migration.ROLLED_BACK
    assert judge_migration(None, "ACTIVE", None, "h1") is Migration.WAIT


def test_how_a_maintenance_ends() -> None:
    assert outcome(0, 0, False) is MaintenanceState.EMPTY
    assert outcome(2, 0, False) is MaintenanceState.READY
    assert outcome(2, 1, False) is MaintenanceState.PARTIAL
    assert outcome(0, 0, True) is MaintenanceState.INTERRUPTED


def test_answers_while_scheduled_and_no_end_while_migrating() -> None:
    assert [s for s in MaintenanceState if answerable(s)] == [MaintenanceState.SCHEDULED]
    assert MaintenanceState.MIGRATING not in ENDABLE
    assert MaintenanceState.ENDED not in ENDABLE

"""The inspector's pure decisions: what to change, when to hold back, how incidents merge."""

from __future__ import annotations

from typing import Any

import pytest

from medevac.cloud.models import DataPlaneStatus
from medevac.inspector.actions import (
    ActionKind,
    ResetPolicy,
    plan_host_lost,
    plan_link_down,
    plan_ports_restore,
)
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.incidents import IllegalTransition, Incident, IncidentState
from medevac.inspector.topology import PortInfo, ServerInfo, Topology
from medevac.monitor.verdicts import Verdict, VerdictKind

DOWN, ACTIVE = DataPlaneStatus.DOWN, DataPlaneStatus.ACTIVE


def server(sid: str, vm_state: str = "active", host: str = "h1") -> ServerInfo:
    return ServerInfo(sid, sid, "p1", host, vm_state, None, {})


def port(
    pid: str,
    physnet: str = "physnet1",
    dps: DataPlaneStatus | None = None,
    device: str | None = None,
) -> PortInfo:
    return PortInfo(pid, "p1", device or "dev-" + pid, "h1", "net", physnet, dps)


def test_host_lost_forces_down_resets_and_downs_ports() -> None:
    plan = plan_host_lost("h1", [server("a")], [port("p")], ResetPolicy.ERROR)
    assert [(a.kind, a.target, a.value) for a in plan] == [
        (ActionKind.FORCE_DOWN, "h1", "true"),
        (ActionKind.RESET_STATE, "a", "error"),
        (ActionKind.PORT_STATUS, "p", "DOWN"),
    ]


def test_host_lost_goes_server_by_server_in_the_order_given() -> None:
    ports = [port("pb", device="b"), port("pa1", device="a"), port("lone"), port("pa2", device="a")]
    plan = plan_host_lost("h1", [server("b"), server("a")], ports, ResetPolicy.ERROR)
    assert [a.target for a in plan] == ["h1", "b", "pb", "a", "pa1", "pa2", "lone"]


@pytest.mark.parametrize("vm_state", ["deleted", "soft-delete", "resized", "error"])
def test_servers_nova_is_done_with_are_never_reset(vm_state: str) -> None:
    plan = plan_host_lost("h1", [server("a", vm_state)], [], ResetPolicy.ERROR)
    assert [a.kind for a in plan] == [ActionKind.FORCE_DOWN]


def test_no_call_for_what_is_already_in_its_target_state() -> None:
    plan = plan_host_lost("h1", [], [port("p", dps=DOWN), port("q", dps=ACTIVE)], ResetPolicy.ERROR)
    assert [a.target for a in plan if a.kind is ActionKind.PORT_STATUS] == ["q"]


def test_reset_policy_none_leaves_servers_alone() -> None:
    plan = plan_host_lost("h1", [server("a")], [], ResetPolicy.NONE)
    assert [a.kind for a in plan] == [ActionKind.FORCE_DOWN]


def test_link_down_touches_only_that_physnets_ports() -> None:
    ports = [port("p1", "physnet1"), port("p2", "physnet2"), port("p3", "physnet1", DOWN)]
    plan = plan_link_down("h1", "physnet1", ports)
    assert [(a.kind, a.target, a.value) for a in plan] == [(ActionKind.PORT_STATUS, "p1", "DOWN")]


def test_restore_puts_back_what_was_there_and_unset_as_active() -> None:
    ports = [port("p1", dps=DOWN), port("p2", dps=DOWN), port("p3", dps=DOWN)]
    plan = plan_ports_restore("h1", ports, {"p1": "ACTIVE", "p2": None})
    assert [(a.target, a.value) for a in plan] == [("p1", "ACTIVE"), ("p2", "ACTIVE")]


# -- the mass-failure guard ---------------------------------------------------------


def test_guard_allows_isolated_failures() -> None:
    g = ZoneGuard(fraction=0.5, window=60, min_hosts=3, hold=300)
    assert g.admit("z", {"h1": 0}, 10, now=0).allowed
    assert g.admit("z", {"h1": 0, "h2": 1}, 10, now=1).allowed


def test_guard_holds_a_zone_losing_half_its_hosts_at_once() -> None:
    g = ZoneGuard(fraction=0.5, window=60, min_hosts=3, hold=300)
    assert g.admit("z", {"h1": 0, "h2": 1}, 6, now=1).allowed
    third = g.admit("z", {"h1": 0, "h2": 1, "h3": 2}, 6, now=2)
    assert not third.allowed and third.newly_held
    fourth = g.admit("z", {"h4": 3}, 6, now=3)
    assert not fourth.allowed and not fourth.newly_held  # announced once
    assert g.admit("other", {"x1": 3}, 6, now=3).allowed  # zones are independent


def test_guard_counts_only_hosts_lost_within_the_window_and_hold_expires() -> None:
    g = ZoneGuard(fraction=0.5, window=10, min_hosts=2, hold=30)
    assert g.admit("z", {"h1": 0, "h2": 20}, 4, now=20).allowed  # h1 is out of the window
    assert not g.admit("z", {"h1": 0, "h2": 20, "h3": 21}, 4, now=21).allowed
    assert g.is_held("z", now=50)
    assert not g.is_held("z", now=52)


def test_hosts_that_came_back_do_not_count() -> None:
    # The inspector passes only hosts still lost: three failures one after another,
    # each healed before the next, never hold the zone.
    g = ZoneGuard(fraction=0.5, window=60, min_hosts=2, hold=30)
    for t, host in enumerate(["h1", "h2", "h3"]):
        assert g.admit("z", {host: float(t)}, 4, now=float(t)).allowed


def test_observer_isolation_holds_the_zone() -> None:
    g = ZoneGuard(hold=30)
    assert g.isolate("z", 0, "cut off")
    assert not g.isolate("z", 1, "cut off")
    decision = g.admit("z", {"h1": 2}, 100, now=2)
    assert not decision.allowed and decision.reason == "cut off"


# -- incidents ----------------------------------------------------------------------


def verdict(kind: VerdictKind, subject: str | None = None, at: float = 1.0) -> Verdict:
    return Verdict(kind, "h1", at, {}, subject)


def test_repeated_host_verdicts_open_one_fault() -> None:
    inc = Incident("h1", "z", 0.0, "t")
    assert inc.add_verdict(verdict(VerdictKind.HOST_UNREACHABLE)) == (True, False)
    assert inc.add_verdict(verdict(VerdictKind.HOST_DOWN)) == (False, False)
    assert inc.add_verdict(verdict(VerdictKind.HOST_UNREACHABLE)) == (False, False)
    assert inc.kind == "host" and len(inc.verdicts) == 3


def test_incident_heals_when_its_last_fault_heals() -> None:
    inc = Incident("h1", "z", 0.0, "t")
    inc.add_verdict(verdict(VerdictKind.LINK_DOWN, "physnet1"))
    inc.add_verdict(verdict(VerdictKind.LINK_DOWN, "physnet2"))
    assert inc.add_verdict(verdict(VerdictKind.LINK_UP, "physnet1")) == (False, False)
    assert inc.add_verdict(verdict(VerdictKind.LINK_UP, "physnet9")) == (False, False)
    assert inc.add_verdict(verdict(VerdictKind.LINK_UP, "physnet2")) == (False, True)


def test_host_loss_outranks_a_link_fault() -> None:
    inc = Incident("h1", "z", 0.0, "t")
    inc.add_verdict(verdict(VerdictKind.LINK_DOWN, "physnet1"))
    assert inc.kind == "link"
    inc.add_verdict(verdict(VerdictKind.HOST_DOWN))
    assert inc.kind == "host"


def test_closed_incident_cannot_move_again() -> None:
    inc = Incident("h1", "z", 0.0, "t")
    inc.move(IncidentState.CORRECTING, 1)
    inc.move(IncidentState.CLOSED, 2)
    with pytest.raises(IllegalTransition):
        inc.move(IncidentState.CORRECTING, 3)


def test_incident_round_trips_through_its_dict() -> None:
    inc = Incident("h1", "z", 0.0, "t")
    inc.add_verdict(verdict(VerdictKind.HOST_DOWN))
    inc.ports_down["p"] = None
    inc.stamp("T01", 0.5)
    again = Incident.from_dict(inc.as_dict())
    assert again.as_dict() == inc.as_dict()


# -- topology -----------------------------------------------------------------------


def test_topology_follows_a_server_between_hosts() -> None:
    topo = Topology()
    topo.replace([server("a", host="h1"), server("b", host="h1")], [], at=0)
    payload: dict[str, Any] = {"uuid": "a", "host": "h2", "state": "active", "tenant_id": "p1"}
    assert topo.on_instance_notification("instance.update", payload)
    assert [s.id for s in topo.servers_on("h1")] == ["b"]
    assert [s.id for s in topo.servers_on("h2")] == ["a"]
    assert not topo.on_instance_notification("instance.update", payload)  # nothing new
    assert topo.on_instance_notification("instance.delete.end", {"uuid": "b"})
    assert topo.servers_on("h1") == []


def test_topology_ignores_notifications_without_a_server() -> None:
    topo = Topology()
    assert not topo.on_instance_notification("instance.update", {"host": "h1"})


def test_ports_by_physnet() -> None:
    topo = Topology()
    topo.replace([], [port("p1", "physnet1"), port("p2", "physnet2")], at=0)
    assert [p.id for p in topo.ports_on("h1", "physnet2")] == ["p2"]
    assert len(topo.ports_on("h1")) == 2

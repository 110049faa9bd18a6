"""Which servers are recovered, in which order, to where: the pure policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medevac.recovery.policy import (
    HostGroup,
    RecoveryMethod,
    ServerAction,
    ServerFacts,
    destinations,
    group_of,
    order_key,
    plan,
    server_action,
)

DEFAULT = HostGroup()


def facts(sid: str, vm_state: str = "active", **metadata: str) -> ServerFacts:
    return ServerFacts(sid, sid, vm_state, metadata)


def test_only_ha_servers_are_evacuated_by_default() -> None:
    servers = [facts("a", HA_Enabled="True"), facts("b", HA_Enabled="False"), facts("c")]
    assert [p.server_id for p in plan(servers, DEFAULT)] == ["a"]


def test_evacuate_all_takes_every_server() -> None:
    servers = [facts("a", HA_Enabled="True"), facts("b", HA_Enabled="False")]
    assert {p.server_id for p in plan(servers, HostGroup(evacuate_all=True))} == {"a", "b"}


def test_medevac_keys_override_the_ha_flag() -> None:
    assert server_action({"HA_Enabled": "True", "medevac:action": "none"}, DEFAULT) == (
        ServerAction.NONE,
        0,
    )
    assert server_action({"medevac:action": "evacuate", "medevac:priority": "7"}, DEFAULT) == (
        ServerAction.EVACUATE,
        7,
    )
    assert server_action({"HA_Enabled": "true", "medevac:priority": "x"}, DEFAULT) == (
        ServerAction.EVACUATE,
        0,
    )


def test_higher_priority_first_then_by_name() -> None:
    servers = [
        facts("low", HA_Enabled="True"),
        facts("high", HA_Enabled="True", **{"medevac:priority": "10"}),
        facts("mid-b", HA_Enabled="True", **{"medevac:priority": "5"}),
        facts("mid-a", HA_Enabled="True", **{"medevac:priority": "5"}),
    ]
    assert [p.server_id for p in plan(servers, DEFAULT)] == ["high", "mid-a", "mid-b", "low"]


def test_stopped_servers_must_end_stopped() -> None:
    (p,) = plan([facts("a", "stopped", HA_Enabled="True")], DEFAULT)
    assert p.expected_status == "SHUTOFF"
    (q,) = plan([facts("b", "active", HA_Enabled="True")], DEFAULT)
    assert q.expected_status == "ACTIVE"


@pytest.mark.parametrize("vm_state", ["deleted", "soft-delete", "building"])
def test_servers_that_cannot_be_recovered_are_left(vm_state: str) -> None:
    assert plan([facts("a", vm_state, HA_Enabled="True")], DEFAULT) == []


def test_error_servers_skipped_only_when_the_group_says_so() -> None:
    s = [facts("a", "error", HA_Enabled="True")]
    assert len(plan(s, DEFAULT)) == 1
    assert plan(s, HostGroup(ignore_error_servers=True)) == []


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (RecoveryMethod.AUTO, [None]),
        (RecoveryMethod.RESERVED_HOST, ["r1", "r2"]),
        (RecoveryMethod.AUTO_PRIORITY, [None, "r1", "r2"]),
        (RecoveryMethod.RH_PRIORITY, ["r1", "r2", None]),
    ],
)
def test_destinations_follow_the_recovery_method(
    method: RecoveryMethod, expected: list[str | None]
) -> None:
    group = HostGroup(recovery_method=method, reserved_hosts=("r1", "failed", "r2"))
    assert destinations(group, "failed") == expected


def test_hosts_find_their_group_first_match_wins() -> None:
    groups = [HostGroup(name="edge", hosts=("edge-*",)), HostGroup(name="core", hosts=("*",))]
    assert group_of("edge-7", groups).name == "edge"
    assert group_of("cmp1", groups).name == "core"
    assert group_of("cmp1", []).name == "default"


@given(
    st.lists(
        st.tuples(st.text("abcdef", min_size=1, max_size=4), st.integers(-5, 5), st.booleans()),
        max_size=40,
        unique_by=lambda t: t[0],
    ),
    st.sampled_from(["active", "stopped", "error", "deleted"]),
)
def test_every_ha_server_is_planned_once_in_priority_order(
    servers: list[tuple[str, int, bool]], vm_state: str
) -> None:
    given_facts = [
        facts(
            sid,
            vm_state if i % 3 == 0 else "active",
            HA_Enabled=str(ha),
            **{"medevac:priority": str(prio)},
        )
        for i, (sid, prio, ha) in enumerate(servers)
    ]
    planned = plan(given_facts, DEFAULT)
    expected = {
        f.id for f in given_facts if f.metadata["HA_Enabled"] == "True" and f.vm_state != "deleted"
    }
    assert sorted(p.server_id for p in planned) == sorted(expected)
    priorities = [p.priority for p in planned]
    assert priorities == sorted(priorities, reverse=True)
    # The inspector corrects the servers in order_key's order: the planned ones in
    # the plan's order, so the first evacuations find their server settled.
    by_key = sorted(given_facts, key=lambda f: order_key(f.metadata, f.name, f.id, DEFAULT))
    assert [f.id for f in by_key if f.id in expected] == [p.server_id for p in planned]
    ha = [f.metadata["HA_Enabled"] == "True" for f in by_key]
    assert ha == sorted(ha, reverse=True)  # servers to evacuate before the others

"""Aodh event-alarm semantics and the index that must agree with them."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medevac.notifier.alarms import (
    ActionTargets,
    Alarm,
    AlarmIndex,
    AlarmSpec,
    check_action_addresses,
    check_action_url,
    mask_url_credentials,
)
from medevac.notifier.events import Event


def spec(
    event_type: str = "compute.instance.update", *terms: dict[str, Any], **kw: Any
) -> AlarmSpec:
    return AlarmSpec.model_validate(
        {"name": "a", "event_rule": {"event_type": event_type, "query": list(terms)}, **kw}
    )


def alarm(s: AlarmSpec, project: str | None = "p1") -> Alarm:
    return Alarm.new(s, project, 0.0)


def event(event_type: str = "compute.instance.update", **traits: Any) -> Event:
    traits.setdefault("project_id", "p1")
    return Event(event_type, 0.0, traits)


def q(field: str, value: Any, op: str = "eq", type_: str = "") -> dict[str, Any]:
    return {"field": field, "op": op, "value": value, "type": type_}


def test_doctor_alarm_matches_its_server_in_error_only() -> None:
    a = alarm(
        spec("compute.instance.update", q("traits.instance_id", "s1"), q("traits.state", "error"))
    )
    assert a.matches(event(instance_id="s1", state="error"))
    assert not a.matches(event(instance_id="s1", state="active"))
    assert not a.matches(event(instance_id="s2", state="error"))
    assert not a.matches(event("compute.host.down", instance_id="s1", state="error"))


def test_missing_trait_never_matches_even_with_ne() -> None:
    a = alarm(spec("*", q("traits.state", "error", "ne")))
    assert a.matches(event(state="active"))
    assert not a.matches(event())


def test_event_type_is_a_shell_wildcard() -> None:
    a = alarm(spec("compute.host.*"))
    assert a.matches(event("compute.host.down"))
    assert a.matches(event("compute.host.up"))
    assert not a.matches(event("compute.instance.update"))


@pytest.mark.parametrize(
    ("term", "traits", "expected"),
    [
        (q("traits.attempts", "3", "ge", "integer"), {"attempts": 3}, True),
        (q("traits.attempts", "3", "gt", "integer"), {"attempts": 3}, False),
        (q("traits.load", "0.5", "lt", "float"), {"load": 0.25}, True),
        (q("traits.load", "0.5", "le", "float"), {"load": 0.75}, False),
        (q("traits.state", "error", "ne", "string"), {"state": "error"}, False),
        (q("traits.attempts", "3", "eq", "integer"), {"attempts": "not a number"}, False),
    ],
)
def test_typed_comparisons(term: dict[str, Any], traits: dict[str, Any], expected: bool) -> None:
    assert alarm(spec("*", term)).matches(event(**traits)) is expected


def test_a_project_alarm_never_sees_another_projects_event() -> None:
    a = alarm(spec("*", q("traits.instance_id", "s1")), project="p1")
    assert not a.matches(event(instance_id="s1", project_id="p2"))
    operator = alarm(spec("*", q("traits.instance_id", "s1")), project=None)
    assert operator.matches(event(instance_id="s1", project_id="p2"))


def test_disabled_alarm_never_matches() -> None:
    assert not alarm(spec("*", enabled=False)).matches(event())


def test_fires_on_change_or_with_repeat_actions() -> None:
    once = alarm(spec("*"))
    once.state = "alarm"
    assert not once.fires_on()
    again = alarm(spec("*", repeat_actions=True))
    again.state = "alarm"
    assert again.fires_on()


@pytest.mark.parametrize(
    "body",
    [
        {"name": "a", "colour": "red"},
        {"name": "a", "type": "threshold"},
        {"name": "a", "severity": "huge"},
        {"name": "a", "event_rule": {"query": [{"field": "traits.x", "op": "like", "value": 1}]}},
        {"name": "a", "event_rule": {"query": [{"field": "resource", "value": 1}]}},
        {"name": ""},
    ],
)
def test_bad_alarms_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AlarmSpec.model_validate(body)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://consumer/x",
        "log://",
        "http:///nohost",
        "http://127.0.0.1:8780/v2/alarms",
        "http://localhost:8780/x",
        "http://[::1]:8780/x",
    ],
)
def test_action_urls_must_be_http_and_not_the_controller(url: str) -> None:
    with pytest.raises(ValueError):
        check_action_url(url, [("127.0.0.1", 8780)])


def test_consumer_urls_pass() -> None:
    loopback = ActionTargets(allow=(ipaddress.ip_network("127.0.0.0/8"),))
    check_action_url("http://127.0.0.1:12346/failure", [("127.0.0.1", 8780)], loopback)
    check_action_url("https://vnfm.example:443/alarm", [("127.0.0.1", 8780)])
    check_action_url("http://192.0.2.7/alarm", [("127.0.0.1", 8780)])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://127.0.0.1:12346/failure", "loopback"),
        ("http://[::1]:12346/failure", "loopback"),
        ("http://[::ffff:127.0.0.1]:9/x", "loopback"),
        ("http://0.0.0.0:9/x", "unspecified"),
        ("http://10.0.0.9:623/x", "action_deny_networks (10.0.0.0/24)"),
        ("http://admin:pw@10.0.0.9/x", "admin:***@"),
    ],
)
def test_link_local_loopback_and_denied_networks_are_refused(url: str, why: str) -> None:
    targets = ActionTargets(deny=(ipaddress.ip_network("10.0.0.0/24"),))
    with pytest.raises(ValueError, match=re.escape(why)) as refused:
        check_action_url(url, [("127.0.0.1", 8780)], targets)
    assert "pw" not in str(refused.value)


def test_allowed_networks_open_loopback_but_never_a_denied_one() -> None:
    targets = ActionTargets(
        allow=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")),
        deny=(ipaddress.ip_network("10.0.0.0/24"),),
    )
    check_action_url("http://127.0.0.2:9/x", [("127.0.0.1", 8780)], targets)
    with pytest.raises(ValueError, match="this controller"):
        check_action_url("http://127.0.0.1:8780/x", [("127.0.0.1", 8780)], targets)
    with pytest.raises(ValueError, match="action_deny_networks"):
        check_action_addresses("http://bmc/x", [ipaddress.ip_address("10.0.0.1")], targets)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://vnfm:hunter2@h:8/p?q=1", "http://vnfm:***@h:8/p?q=1"),
        ("http://alice:s%40cret@[::1]/x", "http://alice:***@[::1]/x"),
        ("http://token@h/x", "http://***@h/x"),
        ("https://h/x", "https://h/x"),
    ],
)
def test_action_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url_credentials(url) == masked


# -- the index agrees with evaluating every alarm -----------------------------------

TYPES = ["compute.instance.update", "compute.host.down", "port.data_plane_status"]
PATTERNS = [*TYPES, "*", "compute.*", "compute.host.?own"]
IDS = ["s1", "s2", "s3"]

terms = st.one_of(
    st.builds(lambda v: q("traits.instance_id", v), st.sampled_from(IDS)),
    st.builds(lambda v: q("traits.host", v), st.sampled_from(["h1", "h2"])),
    st.builds(
        lambda v, op: q("traits.state", v, op),
        st.sampled_from(["error", "active"]),
        st.sampled_from(["eq", "ne"]),
    ),
)
alarm_specs = st.builds(
    lambda et, ts, proj, en: (spec(et, *ts, enabled=en), proj),
    st.sampled_from(PATTERNS),
    st.lists(terms, max_size=3),
    st.sampled_from(["p1", "p2", None]),
    st.booleans(),
)
events = st.builds(
    lambda et, i, h, s, p: Event(
        et, 0.0, {"instance_id": i, "host": h, "state": s, "project_id": p}
    ),
    st.sampled_from(TYPES),
    st.sampled_from(IDS),
    st.sampled_from(["h1", "h2"]),
    st.sampled_from(["error", "active"]),
    st.sampled_from(["p1", "p2"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(alarm_specs, max_size=30), st.lists(events, min_size=1, max_size=5), st.data())
def test_index_finds_exactly_the_matching_alarms(
    specs: list[tuple[AlarmSpec, str | None]], evs: list[Event], data: st.DataObject
) -> None:
    index = AlarmIndex()
    alarms = [alarm(s, p) for s, p in specs]
    for a in alarms:
        index.put(a)
    # Some alarms are replaced by other definitions or removed: the index follows.
    for a in data.draw(st.lists(st.sampled_from(alarms), max_size=5)) if alarms else []:
        index.remove(a.alarm_id)
    live = list(index.alarms.values())
    for e in evs:
        expected = {a.alarm_id for a in live if a.matches(e)}
        found = [a.alarm_id for a in index.matching(e)]
        assert len(found) == len(set(found)), "an alarm matched twice"
        assert set(found) == expected


def test_removed_alarm_leaves_no_trace_in_the_index() -> None:
    index = AlarmIndex()
    a = alarm(spec("compute.instance.update", q("traits.instance_id", "s1")))
    index.put(a)
    index.remove(a.alarm_id)
    assert index.matching(event(instance_id="s1")) == []
    assert len(index) == 0
    assert not index._exact and not index._patterns

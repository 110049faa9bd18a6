"""Aodh's alarm queries: validation as Aodh's, evaluation with SQL's NULL logic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from medevac.notifier.query import (
    ALARM,
    HISTORY,
    InvalidQuery,
    NotAuthorized,
    parse_complex_query,
    parse_list_query,
)


def alarm(name: str, **fields: Any) -> dict[str, Any]:
    record = {
        "alarm_id": f"id-{name}",
        "name": name,
        "type": "event",
        "enabled": True,
        "severity": "low",
        "state": "insufficient data",
        "project_id": "p1",
        "user_id": None,
        "timestamp": "2026-01-01T00:00:00.000000",
        "state_timestamp": "2026-01-01T00:00:00.000000",
    }
    record.update(fields)
    return record


ALARMS = [
    alarm("a", severity="critical", timestamp="2026-01-03T00:00:00.000000"),
    alarm("b", severity="moderate", enabled=False, timestamp="2026-01-02T00:00:00.000000"),
    alarm("c", project_id="p2", user_id="u1"),
    alarm("d", project_id=None, severity="critical", timestamp="2026-01-04T00:00:00.000000"),
]


def run(filter_: Any = None, project: str | None = None, **body: Any) -> list[str]:
    if filter_ is not None:
        body["filter"] = json.dumps(filter_)
    query = parse_complex_query(body, ALARM, project)
    return [r["name"] for r in query.run(ALARMS)]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"=": {"severity": "critical"}}, {"a", "d"}),
        ({"!=": {"severity": "critical"}}, {"b", "c"}),
        ({"=": {"name": "a"}}, {"a"}),
        ({">": {"timestamp": "2026-01-02T12:00:00"}}, {"a", "d"}),
        ({"=>": {"timestamp": "2026-01-03T00:00:00"}}, {"a", "d"}),
        ({"<=": {"timestamp": "2026-01-02T01:00:00+01:00"}}, {"b", "c"}),
        ({"=": {"enabled": False}}, {"b"}),
        ({"in": {"name": ["a", "c", "z"]}}, {"a", "c"}),
        ({"=~": {"name": "^[ab]$"}}, {"a", "b"}),
        ({"AND": [{"=": {"severity": "critical"}}, {"=": {"project": "p1"}}]}, {"a"}),
        ({"or": [{"=": {"name": "a"}}, {"=": {"user": "u1"}}]}, {"a", "c"}),
        ({"not": {"=": {"severity": "critical"}}}, {"b", "c"}),
    ],
)
def test_operators(filter_: Any, expected: set[str]) -> None:
    assert set(run(filter_)) == expected


def test_a_null_field_matches_nothing_not_even_negated() -> None:
    # project_id is NULL for d, user_id for a, b and d: as in SQL, never true.
    assert set(run({"!=": {"project_id": "p1"}})) == {"c"}
    assert set(run({"not": {"=": {"project_id": "p1"}}})) == {"c"}
    assert set(run({"not": {"=": {"user_id": "u1"}}})) == set()
    assert set(run({"or": [{"=": {"user_id": "u1"}}, {"=": {"name": "a"}}]})) == {"a", "c"}
    assert run({"=": {"evaluate_timestamp": "x"}}) == []


def test_newest_first_by_default_and_orderby_and_limit() -> None:
    assert run() == ["d", "a", "b", "c"]
    ordered = run(orderby=json.dumps([{"severity": "DESC"}, {"name": "asc"}]))
    assert ordered == ["a", "d", "b", "c"]  # critical > moderate > low, not by letters
    assert run(orderby=json.dumps([{"project_id": "asc"}]))[0] == "d"  # NULL first
    assert run(orderby=json.dumps([{"project_id": "desc"}]))[-1] == "d"
    assert run(limit=2) == ["d", "a"]


def test_a_project_sees_only_its_own_and_may_not_name_another() -> None:
    assert set(run(project="p1")) == {"a", "b"}
    assert set(run({"=": {"severity": "critical"}}, project="p1")) == {"a"}
    assert set(run({"=": {"project_id": "p1"}}, project="p1")) == {"a", "b"}
    for filter_ in (
        {"=": {"project_id": "p2"}},
        {"not": {"=": {"project": "p2"}}},
        {"or": [{"=": {"name": "a"}}, {"in": {"project_id": ["p1", "p2"]}}]},
    ):
        with pytest.raises(NotAuthorized, match="Not Authorized to access project"):
            run(filter_, project="p1")


def test_history_is_scoped_by_on_behalf_of() -> None:
    changes = [
        {"event_id": "1", "on_behalf_of": "p1", "type": "creation", "timestamp": "2026-01-01"},
        {"event_id": "2", "on_behalf_of": "p2", "type": "creation", "timestamp": "2026-01-02"},
    ]
    query = parse_complex_query({}, HISTORY, "p1")
    assert [c["event_id"] for c in query.run(changes)] == ["1"]
    everything = parse_complex_query({"filter": '{"=": {"type": "creation"}}'}, HISTORY, None)
    assert [c["event_id"] for c in everything.run(changes)] == ["2", "1"]
    with pytest.raises(InvalidQuery, match="does not record"):
        parse_complex_query({"filter": '{"=": {"severity": "low"}}'}, HISTORY, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"filter": "{"}, "Filter expression not valid"),
        ({"filter": '{"=": {"colour": "red"}}'}, "unknown field 'colour'"),
        ({"filter": '{"=": {"alarm_actions": "x"}}'}, "cannot be queried"),
        ({"filter": '{"like": {"name": "a"}}'}, "unknown operator 'like'"),
        ({"filter": '{"and": [{"=": {"name": "a"}}]}'}, "at least two"),
        ({"filter": '{"=": {"name": "a", "type": "event"}}'}, "exactly one field"),
        ({"filter": '{"=": {"name": null}}'}, "string, number or boolean"),
        ({"filter": '{"in": {"name": []}}'}, "non-empty list"),
        ({"filter": '{"=~": {"name": "("}}'}, "invalid regular expression"),
        ({"filter": '{"<": {"timestamp": "yesterday"}}'}, "Failed to parse the timestamp"),
        ({"orderby": '[{"name": "up"}]'}, "Order-by expression not valid"),
        ({"orderby": '[{"colour": "asc"}]'}, "Order-by expression not valid"),
        ({"limit": 0}, "Limit should be positive"),
        ({"limit": "ten"}, "limit"),
        ({"filters": "{}"}, "Unknown attribute for argument body: filters"),
        ([], "JSON object"),
    ],
)
def test_invalid_complex_queries_say_why(body: Any, message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        parse_complex_query(body, ALARM, None)


def q(*terms: tuple[str, str], **params: str) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for name, value in terms:
        items += [("q.field", name), ("q.op", "eq"), ("q.value", value)]
    return items + list(params.items())


def listed(params: list[tuple[str, str]]) -> list[str]:
    return [r["name"] for r in parse_list_query(params).run(ALARMS)]


def test_list_filters_are_eq_on_aodhs_fields() -> None:
    assert set(listed(q(("severity", "critical")))) == {"a", "d"}
    assert listed(q(("severity", "critical"), ("enabled", "true"))) == ["d", "a"]
    assert listed(q(("enabled", "False"))) == ["b"]
    assert listed(q(("timestamp", "2026-01-02T00:00:00"))) == ["b"]
    assert listed(q(("user_id", "u1"))) == ["c"]
    query = parse_list_query(q(("project_id", "p2"), ("all_projects", "True")))
    assert query.all_projects and query.projects() == ["p2"]


def test_list_sort_limit_and_marker() -> None:
    assert listed([("sort", "name:desc")]) == ["d", "c", "b", "a"]
    assert listed([("sort", "severity")]) == ["c", "b", "a", "d"]  # low < moderate
    assert listed([("sort", "name"), ("limit", "2"), ("marker", "id-a")]) == ["b", "c"]
    with pytest.raises(InvalidQuery, match="Marker id-z not found"):
        listed([("marker", "id-z")])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (q(("colour", "red")), "Value: 'colour'. only fields"),
        (q(("description", "x")), "Value: 'description'"),
        ([("q.field", "name"), ("q.op", "gt"), ("q.value", "a")], "only operations eq"),
        ([("q.field", "name"), ("q.op", "like"), ("q.value", "a")], "should be one of"),
        ([("q.field", "name")], "every q.field needs one q.value"),
        (q(("enabled", "maybe")), "field/attribute enabled"),
        (q(("timestamp", "today")), "field/attribute timestamp"),
        (
            [("q.field", "name"), ("q.value", "1"), ("q.type", "decimal")],
            "data type decimal is not supported",
        ),
        ([("q.field", "name"), ("q.value", "x"), ("q.type", "integer")], "Unable to convert"),
        ([("sort", "colour:asc")], "supported sort keys"),
        ([("sort", "name:up")], "asc or desc"),
        ([("limit", "0")], "positive integer"),
        ([("limit", "x")], "positive integer"),
        ([("colour", "red")], "Unknown argument: colour"),
    ],
)
def test_invalid_list_queries_are_refused_never_ignored(
    params: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(InvalidQuery, match=message):
        parse_list_query(params)

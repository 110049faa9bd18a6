"""Aodh's alarm queries: the complex query of ``POST /v2/query/alarms`` and
``POST /v2/query/alarms/history``, and the ``q`` filters, sort, limit and marker of
``GET /v2/alarms``; validated as Aodh validates them and evaluated over the records
the API returns (an alarm's or a history entry's fields).

Aodh runs these queries in SQL: a term on a NULL field is neither true nor false, so
it never matches, not even under ``not``. The evaluation here keeps that logic.

Pure code: no I/O.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# A parsed filter: ("and"|"or", (nodes...)), ("not", node), ("in", field, values),
# or (op, field, value) for the simple operators.
Node = tuple[Any, ...]
Record = Mapping[str, Any]

SIMPLE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    "=<": operator.le,
    ">=": operator.ge,
    "=>": operator.ge,
    "=~": lambda actual, pattern: pattern.search(actual) is not None,
}
NAME_MAPPING = {"user": "user_id", "project": "project_id"}
TIMESTAMP_FIELDS = frozenset({"timestamp", "state_timestamp"})
SEVERITY_RANK = {"low": 0, "moderate": 1, "critical": 2}


class InvalidQuery(ValueError):
    """A query Aodh answers with 400; the message is Aodh's faultstring."""


class NotAuthorized(PermissionError):
    """A project-scoped caller named another project in its query."""

    def __init__(self, project: Any) -> None:
        super().__init__(f"Not Authorized to access project {project}")


@dataclass(frozen=True, slots=True)
class Model:
    """What can be queried: the fields, those medevac cannot query (and why), and
    the field that scopes a project's callers."""

    fields: frozenset[str]
    unqueryable: Mapping[str, str]
    visibility: str


ALARM = Model(
    fields=frozenset(
        {
            "alarm_id",
            "type",
            "enabled",
            "name",
            "description",
            "timestamp",
            "user_id",
            "project_id",
            "state",
            "state_timestamp",
            "state_reason",
            "repeat_actions",
            "severity",
            "evaluate_timestamp",
        }
    ),
    unqueryable={
        name: "it holds JSON"
        for name in (
            "rule",
            "ok_actions",
            "alarm_actions",
            "insufficient_data_actions",
            "time_constraints",
        )
    },
    visibility="project_id",
)
HISTORY = Model(
    fields=frozenset(
        {
            "event_id",
            "alarm_id",
            "type",
            "detail",
            "user_id",
            "project_id",
            "on_behalf_of",
            "timestamp",
        }
    ),
    unqueryable={"severity": "medevac's alarm history does not record it"},
    visibility="on_behalf_of",
)


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time as a naive UTC datetime (Aodh's stored form)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidQuery(f"Failed to parse the timestamp value {value}") from None
    else:
        raise InvalidQuery(f"Failed to parse the timestamp value {value}")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _actual(record: Record, name: str) -> Any:
    value = record.get(name)
    if value is not None and name in TIMESTAMP_FIELDS:
        return parse_time(value)
    return value


def evaluate(node: Node, record: Record) -> bool | None:
    """SQL's three-valued logic: None where a NULL field leaves the term unknown."""
    op = node[0]
    if op in ("and", "or"):
        results = [evaluate(n, record) for n in node[1]]
        decisive: bool = op == "or"  # True decides an "or", False an "and"
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    if op == "not":
        inner = evaluate(node[1], record)
        return None if inner is None else not inner
    actual = _actual(record, node[1])
    if actual is None:
        return None
    if op == "in":
        return any(actual == v for v in node[2])
    if op == "=~":
        text = actual if isinstance(actual, str) else str(actual)
        return bool(SIMPLE_OPS[op](text, node[2]))
    try:
        return bool(SIMPLE_OPS[op](actual, node[2]))
    except TypeError:  # e.g. a string against a number: SQL would not match either
        return None


def _sort_key(name: str) -> Callable[[Record], tuple[int, Any]]:
    def key(record: Record) -> tuple[int, Any]:
        value = _actual(record, name)
        if value is None:
            return (0, 0)  # NULLs first ascending, last descending
        if name == "severity":
            return (1, SEVERITY_RANK.get(value, -1))
        return (1, value)

    return key


def order(records: Iterable[Record], keys: Sequence[tuple[str, bool]]) -> list[Record]:
    """Sorted by ``keys`` (field, descending), the first key first."""
    result = list(records)
    for name, descending in reversed(keys):
        result.sort(key=_sort_key(name), reverse=descending)
    return result


def _visibility_terms(node: Node, visibility: str) -> Iterable[Any]:
    """The values compared with the visibility field anywhere in the filter."""
    op = node[0]
    if op in ("and", "or"):
        for n in node[1]:
            yield from _visibility_terms(n, visibility)
    elif op == "not":
        yield from _visibility_terms(node[1], visibility)
    elif node[1] == visibility:
        yield node[2]


@dataclass(frozen=True, slots=True)
class ComplexQuery:
    filter: Node | None
    orderby: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None

    def run(self, records: Iterable[Record]) -> list[Record]:
        """The records the filter holds true for, ordered (newest first by default),
        at most ``limit``."""
        if self.filter is None:
            found: Iterable[Record] = records
        else:
            node = self.filter
            found = (r for r in records if evaluate(node, r) is True)
        result = order(found, self.orderby or [("timestamp", True)])
        return result if self.limit is None else result[: self.limit]


class _FilterParser:
    def __init__(self, model: Model) -> None:
        self.model = model

    def fail(self, problem: str) -> InvalidQuery:
        return InvalidQuery(f"Filter expression not valid: {problem}")

    def field(self, name: Any) -> str:
        if not isinstance(name, str):
            raise self.fail(f"{name!r} is not a field name")
        if name in self.model.unqueryable:
            raise self.fail(f"field {name!r} cannot be queried: {self.model.unqueryable[name]}")
        if name not in self.model.fields and name not in NAME_MAPPING:
            known = ", ".join(sorted(self.model.fields | NAME_MAPPING.keys()))
            raise self.fail(f"unknown field {name!r} (fields: {known})")
        return NAME_MAPPING.get(name, name)

    def leaf(self, op: str, arg: Any) -> tuple[str, Any]:
        if not isinstance(arg, dict) or len(arg) != 1:
            raise self.fail(f"{op!r} takes an object of exactly one field, got {arg!r}")
        ((name, value),) = arg.items()
        return self.field(name), value

    def node(self, expr: Any) -> Node:
        if not isinstance(expr, dict) or len(expr) != 1:
            raise self.fail(f"{expr!r} must be an object of exactly one operator")
        ((raw_op, arg),) = expr.items()
        op = str(raw_op).lower()
        if op in ("and", "or"):
            if not isinstance(arg, list) or len(arg) < 2:
                raise self.fail(f"{raw_op!r} takes a list of at least two expressions")
            return (op, tuple(self.node(e) for e in arg))
        if op == "not":
            return ("not", self.node(arg))
        if op == "in":
            name, values = self.leaf(raw_op, arg)
            if (
                not isinstance(values, list)
                or not values
                or not all(_scalar(v, booleans=False) for v in values)
            ):
                raise self.fail(f"'in' takes a non-empty list of strings or numbers for {name}")
            if name in TIMESTAMP_FIELDS:
                values = [parse_time(v) for v in values]
            return ("in", name, tuple(values))
        if op not in SIMPLE_OPS:
            ops = ", ".join([*SIMPLE_OPS, "in", "and", "or", "not"])
            raise self.fail(f"unknown operator {raw_op!r} (one of {ops})")
        name, value = self.leaf(raw_op, arg)
        if not _scalar(value, booleans=True):
            raise self.fail(f"the value of {name} must be a string, number or boolean")
        if name in TIMESTAMP_FIELDS:
            value = parse_time(value)
        if op == "=~":
            if not isinstance(value, str):
                raise self.fail(f"'=~' takes a regular expression for {name}")
            try:
                value = re.compile(value)
            except re.error as exc:
                raise self.fail(f"invalid regular expression {value!r}: {exc}") from None
        return (op, name, value)


def _scalar(value: Any, *, booleans: bool) -> bool:
    if isinstance(value, bool):
        return booleans
    return isinstance(value, str | int | float)


def _json_text(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise InvalidQuery(f"{what} not valid: {exc}") from None
    return value


def parse_complex_query(body: Any, model: Model, project: str | None) -> ComplexQuery:
    """Aodh's ComplexQuery body (``filter`` and ``orderby`` as JSON text, ``limit``),
    restricted to ``project`` unless it is None (an operator)."""
    if not isinstance(body, dict):
        raise InvalidQuery("the body must be a JSON object of filter, orderby and limit")
    unknown = sorted(set(body) - {"filter", "orderby", "limit"})
    if unknown:
        raise InvalidQuery(f"Unknown attribute for argument body: {', '.join(unknown)}")
    parser = _FilterParser(model)
    raw = body.get("filter")
    node = None if raw is None else parser.node(_json_text(raw, "Filter expression"))
    if project is not None:
        for value in _visibility_terms(node, model.visibility) if node else ():
            if value != project:
                raise NotAuthorized(value)
        scope: Node = ("=", model.visibility, project)
        node = scope if node is None else ("and", (scope, node))
    orderby: list[tuple[str, bool]] = []
    raw = body.get("orderby")
    if raw is not None:
        terms = _json_text(raw, "Order-by expression")
        if not isinstance(terms, list):
            raise InvalidQuery("Order-by expression not valid: it must be a list")
        for term in terms:
            if not isinstance(term, dict) or len(term) != 1:
                raise InvalidQuery(f"Order-by expression not valid: {term!r} must be one field")
            ((name, direction),) = term.items()
            if name in model.unqueryable or not isinstance(direction, str):
                raise InvalidQuery(f"Order-by expression not valid: {term!r}")
            if direction.lower() not in ("asc", "desc"):
                raise InvalidQuery(
                    f"Order-by expression not valid: {direction!r} is not asc or desc"
                )
            try:
                name = parser.field(name)
            except InvalidQuery as exc:
                raise InvalidQuery(str(exc).replace("Filter", "Order-by", 1)) from None
            orderby.append((name, direction.lower() == "desc"))
    limit = body.get("limit")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidQuery(f"Invalid input for field/attribute limit. Value: '{limit}'.")
        if limit <= 0:
            raise InvalidQuery("Limit should be positive")
    return ComplexQuery(node, orderby, limit)


# -- GET /v2/alarms: q.field/q.op/q.value/q.type, sort, limit, marker ------------------

ALARM_QUERY_FIELDS = (
    "all_projects",
    "enabled",
    "name",
    "project_id",
    "repeat_actions",
    "severity",
    "state",
    "timestamp",
    "type",
    "user_id",
)
ALARM_SORT_KEYS = (
    "alarm_id",
    "enabled",
    "name",
    "type",
    "severity",
    "timestamp",
    "user_id",
    "project_id",
    "state",
    "repeat_actions",
    "state_timestamp",
)
QUERY_OPS = ("lt", "le", "eq", "ne", "ge", "gt")
QUERY_TYPES = ("integer", "float", "string", "boolean", "datetime")
BOOLEAN_FIELDS = frozenset({"all_projects", "enabled", "repeat_actions"})
_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")


def _invalid(name: str, value: Any, problem: str) -> InvalidQuery:
    return InvalidQuery(f"Invalid input for field/attribute {name}. Value: '{value}'. {problem}")


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _invalid(name, value, "it should be a boolean")


def _typed(value: str, kind: str) -> Any:
    """Aodh's Query.get_value: the declared type, or a Python literal if none."""
    if not kind:
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    if kind not in QUERY_TYPES:
        raise InvalidQuery(
            f"The data type {kind} is not supported. The supported data type list is: "
            f"{list(QUERY_TYPES)}"
        )
    try:
        if kind == "integer":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "boolean":
            return _boolean("value", value)
        if kind == "datetime":
            return parse_time(value)
        return value
    except (ValueError, InvalidQuery):
        raise InvalidQuery(
            f"Unable to convert the value {value} to the expected data type {kind}."
        ) from None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What ``GET /v2/alarms`` asked for."""

    terms: list[tuple[str, Any]]  # field, value: every one must be equal
    all_projects: bool = False
    sort: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None
    marker: str | None = None

    def projects(self) -> list[Any]:
        return [value for name, value in self.terms if name == "project_id"]

    def run(self, records: Iterable[Record]) -> list[Record]:
        nodes = [("=", name, value) for name, value in self.terms]
        found = [r for r in records if all(evaluate(n, r) is True for n in nodes)]
        keys = list(self.sort or [("timestamp", True)])
        if all(name != "alarm_id" for name, _ in keys):
            keys.append(("alarm_id", keys[-1][1]))  # a total order, for the marker
        found = order(found, keys)
        if self.marker is not None:
            ids = [r.get("alarm_id") for r in found]
            if self.marker not in ids:
                raise InvalidQuery(f"Marker {self.marker} not found.")
            found = found[ids.index(self.marker) + 1 :]
        return found if self.limit is None else found[: self.limit]


def parse_list_query(params: Sequence[tuple[str, str]]) -> ListQuery:
    """The query string of ``GET /v2/alarms``, refused (400) where Aodh refuses it;
    nothing in it is ignored."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    known = {"q.field", "q.op", "q.value", "q.type", "sort", "limit", "marker"}
    unknown = sorted(set(grouped) - known)
    if unknown:
        raise InvalidQuery(f"Unknown argument: {', '.join(unknown)}")
    fields = grouped.get("q.field", [])
    values = grouped.get("q.value", [])
    ops = grouped.get("q.op") or ["eq"] * len(fields)
    kinds = grouped.get("q.type") or [""] * len(fields)
    if not (len(values) == len(ops) == len(kinds) == len(fields)):
        raise InvalidQuery(
            "Invalid input for field/attribute q. every q.field needs one q.value "
            "(and one q.op and q.type where any is given)"
        )
    terms: list[tuple[str, Any]] = []
    all_projects = False
    for name, op, value, kind in zip(fields, ops, values, kinds, strict=True):
        if name not in ALARM_QUERY_FIELDS:
            raise _invalid(
                "field", name, f"only fields {', '.join(ALARM_QUERY_FIELDS)} are allowed"
            )
        if op not in QUERY_OPS:
            raise _invalid("op", op, f"Value should be one of: {', '.join(QUERY_OPS)}")
        if op != "eq":
            raise _invalid("op", op, "only operations eq are allowed")
        typed = _typed(value, kind)
        if name in BOOLEAN_FIELDS:
            typed = _boolean(name, typed)
        elif name == "timestamp":
            try:
                typed = parse_time(typed)
            except InvalidQuery:
                raise _invalid(name, value, "it should be an ISO 8601 time") from None
        else:
            typed = value  # the stored fields are text: compare the text sent
        if name == "all_projects":
            all_projects = typed
        else:
            terms.append((name, typed))
    sort: list[tuple[str, bool]] = []
    for s in grouped.get("sort", []):
        key, _, direction = s.partition(":")
        if key not in ALARM_SORT_KEYS:
            raise _invalid(
                "sort",
                s,
                "the sort parameter should be a pair of sort key and sort dir combined "
                "with ':', or only sort key specified and sort dir will be default 'asc', "
                f"the supported sort keys are: {', '.join(ALARM_SORT_KEYS)}",
            )
        if direction not in ("", "asc", "desc"):
            raise _invalid("sort", s, "the sort dir should be asc or desc")
        sort.append((key, direction == "desc"))
    limit: int | None = None
    for raw in grouped.get("limit", []):
        try:
            limit = int(raw)
        except ValueError:
            raise _invalid("limit", raw, "it should be a positive integer.") from None
        if limit <= 0:
            raise _invalid("limit", raw, "it should be a positive integer.")
    markers = grouped.get("marker", [])
    return ListQuery(terms, all_projects, sort, limit, markers[-1] if markers else None)

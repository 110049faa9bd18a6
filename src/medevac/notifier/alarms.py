"""Aodh v2 event alarms: the model, the query semantics, and the index that finds the
alarms an event can fire without looking at the others.

Pure code: no I/O. The store persists alarms; the notifier evaluates events here.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import operator
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medevac.notifier.events import Event, iso
from medevac.storage.models import NAME_LENGTH

AlarmState = Literal["ok", "alarm", "insufficient data"]
STATES: tuple[str, ...] = ("ok", "alarm", "insufficient data")
Severity = Literal["low", "moderate", "critical"]

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
# Traits that name one resource: an alarm whose query pins one of them with ``eq``
# is indexed under it, so an event only meets the alarms on its own resources.
RESOURCE_TRAITS = ("instance_id", "port_id", "host", "resource_id")


class QueryError(ValueError):
    """A query term that cannot be evaluated (bad op, type or value)."""


def _cast(value: Any, kind: str) -> Any:
    try:
        if kind in ("", "string"):
            return str(value)
        if kind == "integer":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "boolean":
            text = str(value).lower()
            if text not in ("true", "false"):
                raise ValueError(value)
            return text == "true"
        if kind == "datetime":
            return str(value)  # ISO strings order as times
    except (TypeError, ValueError):
        raise QueryError(f"value {value!r} is not of type {kind!r}") from None
    raise QueryError(f"unknown query type {kind!r} (string, integer, float, boolean, datetime)")


class QueryTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1, max_length=255)
    op: str = "eq"
    value: Any
    type: str = ""

    @field_validator("op")
    @classmethod
    def _known_op(cls, op: str) -> str:
        if op not in OPERATORS:
            raise ValueError(f"unknown op {op!r} (one of {', '.join(OPERATORS)})")
        return op

    @field_validator("field")
    @classmethod
    def _known_field(cls, name: str) -> str:
        if not (name.startswith("traits.") and len(name) > 7) and name not in (
            "event_type",
            "message_id",
        ):
            raise ValueError(f"field {name!r} must be traits.<name>, event_type or message_id")
        return name

    def typed_value(self) -> Any:
        return _cast(self.value, self.type)


class EventRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(default="*", min_length=1, max_length=255)
    query: list[QueryTerm] = Field(default_factory=list, max_length=50)


class AlarmSpec(BaseModel):
    """What a client may send to create or replace an alarm (Aodh's fields)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    type: Literal["event"] = "event"
    description: str = Field(default="", max_length=1000)
    enabled: bool = True
    severity: Severity = "low"
    state: AlarmState = "insufficient data"
    repeat_actions: bool = False
    alarm_actions: list[str] = Field(default_factory=list, max_length=10)
    ok_actions: list[str] = Field(default_factory=list, max_length=10)
    insufficient_data_actions: list[str] = Field(default_factory=list, max_length=10)
    event_rule: EventRule = Field(default_factory=EventRule)
    project_id: str | None = Field(default=None, max_length=NAME_LENGTH)
    user_id: str | None = Field(default=None, max_length=NAME_LENGTH)
    time_constraints: list[Any] = Field(default_factory=list, max_length=0)

    def actions(self) -> Iterable[str]:
        yield from self.alarm_actions
        yield from self.ok_actions
        yield from self.insufficient_data_actions


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ActionTargets:
    """Where alarm actions may send: never into ``deny``; into loopback, link-local,
    unspecified or multicast addresses only inside ``allow``."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for network in self.deny:
            if address in network:
                return f"is in notifier.action_deny_networks ({network})"
        if any(address in network for network in self.allow):
            return None
        for kind in ("loopback", "link_local", "unspecified", "multicast"):
            if getattr(address, f"is_{kind}"):
                kind = kind.replace("_", "-")
                return f"is a {kind} address (not in notifier.action_allow_networks)"
        return None


def mask_url_credentials(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***`` (the whole user
    part when it has no password: then it is often a token)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name, colon, _password = user.partition(":")
    netloc = f"{name}:***@{host}" if colon else f"***@{host}"
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


def action_host(url: str) -> tuple[str, int]:
    """The host (lower case, no brackets) and port an action URL sends to; a consumer is
    named by them in the audit log, so together they fit its subject."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"action {mask_url_credentials(url)!r} must be an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"action {mask_url_credentials(url)!r} has an invalid port") from None
    if len(f"{parts.hostname}:{port}") > NAME_LENGTH:
        raise ValueError(
            f"action {mask_url_credentials(url)[:80]!r}...: its host and port are longer "
            f"than {NAME_LENGTH} characters"
        )
    return parts.hostname.lower(), port


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_action_url(
    url: str, forbidden: Iterable[tuple[str, int]], targets: ActionTargets | None = None
) -> None:
    """Raise ValueError unless ``url`` is an http(s) URL that is not the controller itself
    and, when its host is an IP address, one ``targets`` allows (names: see
    :func:`check_action_addresses`, once resolved)."""
    host, port = action_host(url)
    for own_host, own_port in forbidden:
        if port == own_port and _same_host(host, own_host.lower()):
            raise ValueError(f"action {mask_url_credentials(url)!r} points at this controller")
    address = literal_address(host)
    if address is not None:
        check_action_addresses(url, [address], targets or ActionTargets())


def check_action_addresses(
    url: str, addresses: Iterable[IPAddress], targets: ActionTargets
) -> None:
    """Raise ValueError when any address ``url``'s host stands for is refused."""
    for address in addresses:
        why = targets.refusal(address)
        if why is not None:
            raise ValueError(f"action {mask_url_credentials(url)!r} is refused: {address} {why}")


def _same_host(a: str, b: str) -> bool:
    if a == b:
        return True
    local = {"localhost", "0.0.0.0", "::"}

    def loopback(h: str) -> bool:
        if h in local:
            return True
        try:
            return ipaddress.ip_address(h).is_loopback
        except ValueError:
            return False

    # A controller bound to every address also answers on loopback.
    return loopback(a) and loopback(b)


@dataclass(slots=True)
class Alarm:
    """A stored alarm: its spec plus identity and current state."""

    alarm_id: str
    spec: AlarmSpec
    project_id: str | None  # None: an operator's alarm, sees every project's events
    state: str
    state_timestamp: float
    timestamp: float
    state_reason: str = ""
    _terms: list[tuple[str, Callable[[Any, Any], bool], Any]] = field(
        default_factory=list, repr=False
    )
    query_json: str = field(default="", repr=False)  # for Aodh's reason text, made once

    def __post_init__(self) -> None:
        self._terms = [
            (t.field, OPERATORS[t.op], t.typed_value()) for t in self.spec.event_rule.query
        ]
        self.query_json = json.dumps([t.model_dump() for t in self.spec.event_rule.query])

    @classmethod
    def new(cls, spec: AlarmSpec, project_id: str | None, now: float) -> Alarm:
        return cls(str(uuid.uuid4()), spec, project_id, spec.state, now, now)

    def resource_key(self) -> tuple[str, str] | None:
        for term in self.spec.event_rule.query:
            name = term.field.removeprefix("traits.")
            if term.field.startswith("traits.") and name in RESOURCE_TRAITS and term.op == "eq":
                return name, str(term.value)
        return None

    def sees(self, event: Event) -> bool:
        """Scope: a project's alarm only sees events about that project's resources."""
        return self.project_id is None or self.project_id == event.project_id

    def matches(self, event: Event) -> bool:
        """Aodh's event evaluation: type by shell wildcard, every query term true."""
        if not self.spec.enabled or not self.sees(event):
            return False
        if not fnmatch.fnmatchcase(event.event_type, self.spec.event_rule.event_type):
            return False
        for name, op, expected in self._terms:
            if name.startswith("traits."):
                actual = event.traits.get(name[7:])
            elif name == "event_type":
                actual = event.event_type
            else:
                actual = event.message_id
            if actual is None:
                return False
            try:
                if isinstance(expected, str) and not isinstance(actual, str):
                    actual = str(actual)
                if not op(actual, expected):
                    return False
            except TypeError:
                return False
        return True

    def fires_on(self) -> bool:
        """A match moves the alarm to ``alarm``; actions run on that change, or always
        with ``repeat_actions``."""
        return self.state != "alarm" or self.spec.repeat_actions

    def as_api(self) -> dict[str, Any]:
        body = self.spec.model_dump()
        body.update(
            alarm_id=self.alarm_id,
            project_id=self.project_id,
            state=self.state,
            state_reason=self.state_reason,
            state_timestamp=iso(self.state_timestamp),
            timestamp=iso(self.timestamp),
        )
        return body


def _is_pattern(event_type: str) -> bool:
    return any(c in event_type for c in "*?[")


@dataclass(slots=True)
class _Bucket:
    by_resource: dict[tuple[str, str], dict[str, Alarm]] = field(default_factory=dict)
    unpinned: dict[str, Alarm] = field(default_factory=dict)

    def add(self, alarm: Alarm) -> None:
        key = alarm.resource_key()
        if key is None:
            self.unpinned[alarm.alarm_id] = alarm
        else:
            self.by_resource.setdefault(key, {})[alarm.alarm_id] = alarm

    def discard(self, alarm: Alarm) -> None:
        key = alarm.resource_key()
        if key is None:
            self.unpinned.pop(alarm.alarm_id, None)
            return
        group = self.by_resource.get(key)
        if group is not None:
            group.pop(alarm.alarm_id, None)
            if not group:
                del self.by_resource[key]

    def candidates(self, event: Event) -> Iterable[Alarm]:
        yield from self.unpinned.values()
        for name in RESOURCE_TRAITS:
            value = event.traits.get(name)
            if value is not None:
                group = self.by_resource.get((name, str(value)))
                if group:
                    yield from group.values()

    def __len__(self) -> int:
        return len(self.unpinned) + sum(len(g) for g in self.by_resource.values())


class AlarmIndex:
    """Alarms by event type (exact, or wildcard patterns) and by pinned resource."""

    def __init__(self) -> None:
        self.alarms: dict[str, Alarm] = {}
        self._exact: dict[str, _Bucket] = {}
        self._patterns: dict[str, _Bucket] = {}

    def _bucket(self, alarm: Alarm, create: bool) -> _Bucket | None:
        event_type = alarm.spec.event_rule.event_type
        table = self._patterns if _is_pattern(event_type) else self._exact
        if create:
            return table.setdefault(event_type, _Bucket())
        return table.get(event_type)

    def put(self, alarm: Alarm) -> None:
        self.remove(alarm.alarm_id)
        self.alarms[alarm.alarm_id] = alarm
        bucket = self._bucket(alarm, create=True)
        assert bucket is not None
        bucket.add(alarm)

    def remove(self, alarm_id: str) -> Alarm | None:
        old = self.alarms.pop(alarm_id, None)
        if old is not None:
            bucket = self._bucket(old, create=False)
            if bucket is not None:
                bucket.discard(old)
                if not len(bucket):
                    table = (
                        self._patterns
                        if _is_pattern(old.spec.event_rule.event_type)
                        else self._exact
                    )
                    table.pop(old.spec.event_rule.event_type, None)
        return old

    def matching(self, event: Event) -> list[Alarm]:
        """The alarms this event satisfies; cost grows with candidates, not with alarms."""
        found: list[Alarm] = []
        bucket = self._exact.get(event.event_type)
        if bucket is not None:
            found.extend(a for a in bucket.candidates(event) if a.matches(event))
        for pattern, bucket in self._patterns.items():
            if fnmatch.fnmatchcase(event.event_type, pattern):
                found.extend(a for a in bucket.candidates(event) if a.matches(event))
        return found

    def action_urls(self, resources: Iterable[tuple[str, str]]) -> Counter[str]:
        """Where events about these resources (trait, value) could send webhooks, and
        how many alarms could send to each: the actions of the alarms pinned to them
        and of the alarms pinned to none."""
        keys = list(resources)
        alarms: dict[str, Alarm] = {}
        for bucket in [*self._exact.values(), *self._patterns.values()]:
            alarms.update(bucket.unpinned)
            for key in keys:
                alarms.update(bucket.by_resource.get(key, {}))
        return Counter(url for alarm in alarms.values() for url in alarm.spec.alarm_actions)

    def __len__(self) -> int:
        return len(self.alarms)

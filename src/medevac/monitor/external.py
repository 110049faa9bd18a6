"""External monitors as fault inputs: OPNFV Doctor's inspector API and Alertmanager.

Two HTTP inputs turn what other monitoring systems already know into ``RawFault``
values for the ``FaultSink``:

- ``PUT /events``: the raw-fault format OPNFV Doctor's monitors send an inspector,
  a JSON list of ``{"time", "type", "details": {"hostname", "status", ...}}``.
- ``POST /v1/alertmanager``: Prometheus Alertmanager's webhook (payload version 4).
  Each alert carrying the host label (``instance`` by default, ``:port`` stripped)
  is one fault; the optional ``medevac_kind`` label picks what kind of fault.

Parsing is pure (``parse_doctor_events`` / ``doctor_faults``, ``parse_alertmanager``
/ ``alertmanager_faults``): every problem with a payload is a pydantic
``ValidationError`` whose location names the offending field, which the API turns
into a 400 envelope. Both routes need the admin role: monitors are operator
infrastructure, not tenants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic_core import PydanticCustomError

from medevac.monitor.raw import RawFault, RawFaultKind

__all__ = [
    "ALERTMANAGER_KINDS",
    "DOCTOR_TYPES",
    "AlertBatch",
    "AlertmanagerAlert",
    "AlertmanagerWebhook",
    "DoctorDetails",
    "DoctorEvent",
    "alert_fault",
    "alertmanager_faults",
    "doctor_fault",
    "doctor_faults",
    "host_from_label",
    "iso_epoch",
    "parse_alertmanager",
    "parse_doctor_events",
]

DOCTOR_SOURCE = "doctor"
ALERTMANAGER_SOURCE = "alertmanager"

DOCTOR_TYPES = ("compute.host.down", "compute.host.up")

# medevac_kind label value -> (kind while firing, kind once resolved)
ALERTMANAGER_KINDS: Mapping[str, tuple[RawFaultKind, RawFaultKind]] = {
    RawFaultKind.HOST_DOWN.value: (RawFaultKind.HOST_DOWN, RawFaultKind.HOST_UP),
    RawFaultKind.COMPUTE_PROCESS_DOWN.value: (
        RawFaultKind.COMPUTE_PROCESS_DOWN,
        RawFaultKind.COMPUTE_PROCESS_UP,
    ),
    RawFaultKind.LINK_DOWN.value: (RawFaultKind.LINK_DOWN, RawFaultKind.LINK_UP),
}
KIND_LABEL = "medevac_kind"
PHYSNET_LABEL = "physnet"


# -- time ----------------------------------------------------------------------------


def iso_epoch(value: str, zone: tzinfo = UTC) -> float:
    """Epoch seconds of an ISO 8601 date and time; a value without an offset is read
    in ``zone`` (UTC unless told; in an hour a clock change repeats, the earlier one).

    Raises ValueError when ``value`` is not an ISO 8601 date with a time of day.
    """
    if "T" not in value.upper() and " " not in value:
        raise ValueError("needs a date and a time of day")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.timestamp()


def _check_iso_time(value: str) -> str:
    try:
        iso_epoch(value)
    except (ValueError, OverflowError):
        raise PydanticCustomError(
            "iso_time",
            "not an ISO 8601 date and time (e.g. 2016-04-12T08:00:00.123Z): {value}",
            {"value": value[:64]},
        ) from None
    return value


IsoTime = Annotated[str, AfterValidator(_check_iso_time)]
"""An ISO 8601 timestamp, kept as sent (idempotency keys use it verbatim)."""


# -- OPNFV Doctor --------------------------------------------------------------------


class DoctorDetails(BaseModel):
    """``details`` of a Doctor event; fields beyond these are kept as fault details."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    hostname: str = Field(min_length=1, max_length=255)
    status: Literal["down", "up"] | None = None
    monitor: str | None = None
    monitor_event_id: str | None = None


class DoctorEvent(BaseModel):
    """One raw fault as an OPNFV Doctor monitor reports it to an inspector."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # Doctor's sample and collectd monitors send a constant one: kept, never a key.
    id: str | None = Field(default=None, max_length=255)
    time: IsoTime
    type: Literal["compute.host.down", "compute.host.up"]
    details: DoctorDetails

    @model_validator(mode="after")
    def _consistent(self) -> DoctorEvent:
        if self.type == "compute.host.up" and self.details.status == "down":
            raise PydanticCustomError(
                "doctor_status",
                "details.status 'down' contradicts type 'compute.host.up'",
            )
        return self

    @property
    def kind(self) -> RawFaultKind:
        """Doctor's convention: the type names the event, ``status`` the host's state."""
        if self.type == "compute.host.up" or self.details.status == "up":
            return RawFaultKind.HOST_UP
        return RawFaultKind.HOST_DOWN

    @property
    def key(self) -> str:
        """The host, type and time always: Doctor's sample monitor sends the same
        ``monitor_event_id`` in every report, so the id alone would make a report about
        another host, or a later failure of the same one, a duplicate."""
        details = self.details
        key = f"doctor:{self.type}:{details.hostname}:{self.time}"
        if details.monitor_event_id is not None:
            key += f":{details.monitor or ''}:{details.monitor_event_id}"
        return key


_DOCTOR_EVENTS: TypeAdapter[list[DoctorEvent]] = TypeAdapter(list[DoctorEvent])


def parse_doctor_events(data: object) -> list[DoctorEvent]:
    """Validate a decoded ``PUT /events`` body; raises pydantic's ValidationError."""
    return _DOCTOR_EVENTS.validate_python(data)


def doctor_fault(event: DoctorEvent, received_at: float, zone: tzinfo = UTC) -> RawFault:
    """The fault one event reports; a ``time`` without an offset is read in ``zone``."""
    return RawFault(
        source=DOCTOR_SOURCE,
        kind=event.kind,
        host=event.details.hostname,
        observed_at=iso_epoch(event.time, zone),
        received_at=received_at,
        key=event.key,
        details={
            "type": event.type,
            **({"id": event.id} if event.id is not None else {}),
            **event.details.model_dump(exclude={"hostname"}),
        },
    )


def doctor_faults(
    events: Sequence[DoctorEvent], received_at: float, zone: tzinfo = UTC
) -> list[RawFault]:
    return [doctor_fault(e, received_at, zone) for e in events]


# -- Prometheus Alertmanager ---------------------------------------------------------

# Alertmanager has added fields to version 4 payloads before (truncatedAlerts) without
# changing the version, so the known fields are declared and unknown ones ignored.


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    kind = labels.get(KIND_LABEL)
    if kind is None:
        return labels
    if kind not in ALERTMANAGER_KINDS:
        accepted = ", ".join(repr(k) for k in ALERTMANAGER_KINDS)
        raise PydanticCustomError(
            "medevac_kind",
            "label medevac_kind must be one of {accepted}, not '{kind}'",
            {"accepted": accepted, "kind": kind[:64]},
        )
    if kind == RawFaultKind.LINK_DOWN.value and not labels.get(PHYSNET_LABEL):
        raise PydanticCustomError(
            "physnet", "label physnet is required when medevac_kind is 'link.down'"
        )
    return labels


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: Annotated[dict[str, str], AfterValidator(_check_labels)]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: IsoTime
    endsAt: IsoTime | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None

    @model_validator(mode="after")
    def _resolved_has_end(self) -> AlertmanagerAlert:
        if self.status == "resolved" and self.endsAt is None:
            raise PydanticCustomError("ends_at", "endsAt is required for a resolved alert")
        return self

    @property
    def identity(self) -> str:
        """The fingerprint, or the sorted labels when Alertmanager sent none."""
        if self.fingerprint:
            return self.fingerprint
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))

    @property
    def key(self) -> str:
        return f"alertmanager:{self.identity}:{self.status}:{self.startsAt}"

    @property
    def observed_at(self) -> float:
        if self.status == "resolved" and self.endsAt is not None:
            return iso_epoch(self.endsAt)
        return iso_epoch(self.startsAt)

    @property
    def kind(self) -> RawFaultKind:
        firing, resolved = ALERTMANAGER_KINDS[self.labels.get(KIND_LABEL, "host.down")]
        return firing if self.status == "firing" else resolved


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook notification (``version`` "4")."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    version: Literal["4"]
    # Field names are Alertmanager's own (camelCase).
    groupKey: str | None = None
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str | None = None
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    alerts: list[AlertmanagerAlert]


def parse_alertmanager(data: object) -> AlertmanagerWebhook:
    """Validate a decoded webhook body; raises pydantic's ValidationError."""
    return AlertmanagerWebhook.model_validate(data)


def host_from_label(value: str) -> str | None:
    """The host in an ``instance``-style label: ``compute1:9100`` -> ``compute1``.

    ``[fd00::1]:9100`` gives ``fd00::1``; a bare IPv6 address is kept whole. None
    when nothing is left.
    """
    value = value.strip()
    if value.startswith("["):
        inside, bracket, _ = value[1:].partition("]")
        return (inside or None) if bracket else None
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        if port.isdigit():
            value = name
    return value or None


def alert_fault(
    alert: AlertmanagerAlert, received_at: float, *, host_label: str = "instance"
) -> RawFault | None:
    """The fault one alert reports, or None when it has no usable host label."""
    raw_host = alert.labels.get(host_label)
    host = host_from_label(raw_host) if raw_host is not None else None
    if host is None:
        return None
    kind = alert.kind
    details: dict[str, Any] = {"status": alert.status, "labels": dict(alert.labels)}
    if kind in (RawFaultKind.LINK_DOWN, RawFaultKind.LINK_UP):
        details["physnet"] = alert.labels[PHYSNET_LABEL]
    if alert.fingerprint:
        details["fingerprint"] = alert.fingerprint
    return RawFault(
        source=ALERTMANAGER_SOURCE,
        kind=kind,
        host=host,
        observed_at=alert.observed_at,
        received_at=received_at,
        key=alert.key,
        details=details,
    )


@dataclass(frozen=True, slots=True)
class AlertBatch:
    faults: list[RawFault]
    skipped: int  # alerts without the host label


def alertmanager_faults(
    webhook: AlertmanagerWebhook, received_at: float, *, host_label: str = "instance"
) -> AlertBatch:
    faults: list[RawFault] = []
    skipped = 0
    for alert in webhook.alerts:
        fault = alert_fault(alert, received_at, host_label=host_label)
        if fault is None:
            skipped += 1
        else:
            faults.append(fault)
    return AlertBatch(faults, skipped)


# -- routes --------------------------------------------------------------------------

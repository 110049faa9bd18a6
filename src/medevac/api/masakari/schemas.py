"""Masakari's request bodies (api/openstack/ha/schemas/*.py, validation/parameter_types.py).

Pure validation with pydantic: unknown fields are refused, as Masakari's
``additionalProperties: false`` does; booleans take Masakari's spellings ("True",
"yes", "on", "1", ...). ``ValidationError``'s first error becomes the 400's message.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from medevac.storage.models import TEXT_LENGTH

TRUE = frozenset({"true", "1", "on", "yes", "y", "t"})
FALSE = frozenset({"false", "0", "off", "no", "n", "f"})
MARGIN = timedelta(days=1)  # kept from the ends of datetime's range


def masakari_bool(value: object) -> object:
    """true/false, or one of the strings Masakari takes for them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
    raise PydanticCustomError("boolean", "must be a boolean (true/false, 'True', 'yes', ...)")


def strict_bool(value: str) -> bool:
    """A query's boolean, as oslo's strict bool_from_string takes it; ValueError if not."""
    result = masakari_bool(value) if isinstance(value, str) else None
    if not isinstance(result, bool):
        raise ValueError(value)
    return result


def _no_edge_space(value: str) -> str:
    if value != value.strip() or not value.isprintable():
        raise PydanticCustomError(
            "name", "must be printable, without leading or trailing whitespace"
        )
    return value


Bool = Annotated[bool, BeforeValidator(masakari_bool)]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_no_edge_space)
]
Description = Annotated[str, StringConstraints(max_length=255)]
RecoveryMethod = Literal["auto", "reserved_host", "auto_priority", "rh_priority"]
HostType = Annotated[str, StringConstraints(max_length=255, pattern=r"^[a-zA-Z0-9]*$")]
ControlAttributes = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_LENGTH)]
Hostname = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9\-._]*$")
]
Event = Literal["STARTED", "STOPPED"]
Short = Annotated[str, StringConstraints(min_length=1, max_length=255)]


def _uuid(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise PydanticCustomError("uuid", "must be a UUID") from None
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


def _one_at_least(model: BaseModel) -> BaseModel:
    if not model.model_fields_set:
        raise PydanticCustomError("empty", "needs at least one field to change")
    return model


def _not_null(value: object) -> object:
    """An update's field given must have a value: only ``description`` may be null, as
    in Masakari's schemas (None here means "not given")."""
    if value is None:
        raise PydanticCustomError("null", "may not be null")
    return value


class SegmentCreate(_Body):
    name: Name
    recovery_method: RecoveryMethod
    service_type: Name
    description: Description | None = None
    enabled: Bool = True  # from 1.2: refused below it, before validation


class SegmentUpdate(_Body):
    name: Name | None = None
    recovery_method: RecoveryMethod | None = None
    service_type: Name | None = None
    description: Description | None = None
    enabled: Bool | None = None

    _one = model_validator(mode="after")(_one_at_least)
    _given = field_validator("name", "recovery_method", "service_type", "enabled", mode="before")(
        _not_null
    )


class HostCreate(_Body):
    name: Name
    type: HostType
    control_attributes: ControlAttributes
    reserved: Bool = False
    on_maintenance: Bool = False


class HostUpdate(_Body):
    name: Name | None = None
    type: HostType | None = None
    control_attributes: ControlAttributes | None = None
    reserved: Bool | None = None
    on_maintenance: Bool | None = None

    _one = model_validator(mode="after")(_one_at_least)
    _given = field_validator(
        "name", "type", "control_attributes", "reserved", "on_maintenance", mode="before"
    )(_not_null)


class HostPayload(_Body):
    event: Event
    host_status: Literal["NORMAL", "UNKNOWN"] | None = None
    cluster_status: Literal["ONLINE", "OFFLINE"] | None = None


class ProcessPayload(_Body):
    process_name: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    event: Event


class VmPayload(_Body):
    instance_uuid: Annotated[str, AfterValidator(_uuid)]
    vir_domain_event: Short
    event: Short


PAYLOADS: dict[str, type[_Body]] = {
    "COMPUTE_HOST": HostPayload,
    "PROCESS": ProcessPayload,
    "VM": VmPayload,
}


def parse_time(value: str) -> datetime:
    """An ISO 8601 time as oslo's parse_isotime takes it (no zone: UTC); ValueError if
    it is not one, or is within a day of the first or last time Python can hold."""
    parsed = datetime.fromisoformat(value.strip())
    parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    try:
        # The duplicate check looks back from it, and answers show it in UTC: a time at
        # the calendar's edge would overflow there.
        (parsed - MARGIN).astimezone(UTC)
        (parsed + MARGIN).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value[:64]} is out of range") from None
    return parsed


def _time(value: str) -> str:
    try:
        parse_time(value)
    except ValueError:
        raise PydanticCustomError("time", "must be an ISO 8601 time") from None
    return value


class NotificationCreate(_Body):
    type: Literal["COMPUTE_HOST", "VM", "PROCESS"]
    hostname: Hostname
    generated_time: Annotated[str, AfterValidator(_time)]
    payload: dict[str, Any]  # validated by type: see ``PAYLOADS``

    @property
    def generated_at(self) -> datetime:
        return parse_time(self.generated_time)


def problem(exc: ValidationError, wrapper: str) -> str:
    """The first problem of a body, as the 400's message."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in (wrapper, *first["loc"]))
    return f"Invalid input for field/attribute {where}: {first['msg']}"

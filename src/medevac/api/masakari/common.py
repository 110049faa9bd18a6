"""What the Masakari routes share: Masakari's fault, the caller's roles, the request's
microversion and body, Masakari's paging and filters, the context the routes act in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor, register_url_convertor

from medevac.api.auth import Principal, require
from medevac.api.errors import masakari_error_body
from medevac.api.masakari import schemas, versions, views
from medevac.config import Role
from medevac.monitor.raw import FaultSink
from medevac.storage.db import Database
from medevac.storage.segments import SegmentRow, SegmentStore

MAX_LIMIT = 1000  # Masakari's osapi_max_limit

ComputeHosts = Callable[[], Awaitable[Collection[str]]]


class Fault(Exception):
    """Raise from a route to answer with Masakari's fault body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fault_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(masakari_error_body(status, message), status_code=status, headers=headers)


class ProjectConvertor(Convertor[str]):
    """A project id in a path, as Masakari's routes take it."""

    regex = "[0-9a-f\\-]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("masakari_project", ProjectConvertor())

Reader = Depends(require(Role.ADMIN, Role.READER))
Admin = Depends(require(Role.ADMIN))


@dataclass
class Context:
    """What the routes act on: the store, the monitor's fault sink (None: no monitor
    here), Nova's compute hosts (None: not checked), the wall clock."""

    db: Database
    sink: FaultSink | None = None
    compute_hosts: ComputeHosts | None = None
    clock: Callable[[], float] = time.time
    store: SegmentStore = field(init=False)
    # One notification at a time per host, as Masakari does: the duplicate check and
    # the record are one step for concurrent reports of one host.
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = SegmentStore(self.db)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def segment_or_404(self, segment_id: str) -> SegmentRow:
        segment = await asyncio.to_thread(self.store.segment, segment_id)
        if segment is None:
            raise Fault(404, f"Failover segment {segment_id} could not be found.")
        return segment

    async def audit(
        self, kind: str, subject: str, principal: Principal, detail: dict[str, Any]
    ) -> None:
        await asyncio.to_thread(self.db.record_audit, kind, subject, principal.name, detail)


def version(request: Request) -> versions.Version:
    return getattr(request.state, "masakari_version", versions.MIN_VERSION)


async def body(request: Request, wrapper: str) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise Fault(400, "Malformed request body") from None
    if not isinstance(data, dict) or not isinstance(data.get(wrapper), dict) or len(data) != 1:
        raise Fault(400, f"The request body must be an object with one member, {wrapper!r}")
    inner: dict[str, Any] = data[wrapper]
    return inner


def parse(model: type[BaseModel], data: dict[str, Any], wrapper: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Fault(400, schemas.problem(exc, wrapper)) from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return MAX_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise Fault(400, "limit param must be an integer") from None
    if limit < 0:
        raise Fault(400, "limit param must be positive")
    return min(limit or MAX_LIMIT, MAX_LIMIT)


def _marker(request: Request) -> int | None:
    raw = request.query_params.get("marker")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Fault(400, f"Marker {raw[:64]} could not be found.") from None


def paged(request: Request, items: list[dict[str, Any]], allowed: Sequence[str]) -> list[Any]:
    q = request.query_params
    try:
        sort = views.sort_params(q.getlist("sort_key"), q.getlist("sort_dir"), allowed)
        return views.page(items, sort, _marker(request), _limit(request))
    except views.BadPage as exc:
        raise Fault(400, str(exc)) from None


def bool_filter(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return schemas.strict_bool(raw)
    except ValueError:
        raise Fault(400, f"Invalid value for {name}: {raw[:32]!r} is not a boolean") from None

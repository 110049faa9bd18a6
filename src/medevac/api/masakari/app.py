"""The Masakari-compatible application, mounted at ``/instance-ha`` by the main API.

Its own application so that every answer, errors included, is Masakari's: fault
bodies ``{"badRequest": {"code": 400, "message": ...}}``, the microversion echoed in
``OpenStack-API-Version`` with ``Vary``. Tokens are the main API's (static or
Keystone); every resource needs the admin role to change and admin or reader to read
(Masakari's policy is admin-only; a member sees nothing). Each resource answers at
``/v1/...`` and at ``/v1/{project_id}/...``, as Masakari's routes do.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from medevac.api.auth import Principal, TokenRegistry, require
from medevac.api.errors import ApiError, log_unhandled, request_id
from medevac.api.masakari import schemas, versions, views
from medevac.config import Role
from medevac.monitor.masakari import read_notification
from medevac.monitor.raw import FaultSink, Ignored, UnknownHost
from medevac.storage.db import Database
from medevac.storage.segments import (
    Conflict,
    NotFound,
    NotificationRow,
    SegmentHostRow,
    SegmentRow,
    SegmentStore,
    columns,
)

log = logging.getLogger(__name__)

MAX_LIMIT = 1000  # Masakari's osapi_max_limit
DUPLICATE_WINDOW = timedelta(seconds=180)  # duplicate_notification_detection_interval
VERSION_UPDATED = "2016-07-01T11:33:21Z"
FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}
SEGMENT_DISABLED = "Recovery aborted: the segment HA is disabled."

ComputeHosts = Callable[[], Awaitable[Collection[str]]]


class Fault(Exception):
    """Raise from a route to answer with Masakari's fault body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fault_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    name = FAULT_NAMES.get(status, "masakariFault")
    body = {name: {"code": status, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


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


def _version(request: Request) -> versions.Version:
    return getattr(request.state, "masakari_version", versions.MIN_VERSION)


async def _body(request: Request, wrapper: str) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise Fault(400, "Malformed request body") from None
    if not isinstance(data, dict) or not isinstance(data.get(wrapper), dict) or len(data) != 1:
        raise Fault(400, f"The request body must be an object with one member, {wrapper!r}")
    inner: dict[str, Any] = data[wrapper]
    return inner


def _parse(model: type[BaseModel], data: dict[str, Any], wrapper: str) -> Any:
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


def _paged(request: Request, items: list[dict[str, Any]], allowed: Sequence[str]) -> list[Any]:
    q = request.query_params
    try:
        sort = views.sort_params(q.getlist("sort_key"), q.getlist("sort_dir"), allowed)
        return views.page(items, sort, _marker(request), _limit(request))
    except views.BadPage as exc:
        raise Fault(400, str(exc)) from None


def _bool_filter(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return schemas.strict_bool(raw)
    except ValueError:
        raise Fault(400, f"Invalid value for {name}: {raw[:32]!r} is not a boolean") from None


def masakari_app(
    db: Database,
    tokens: TokenRegistry,
    sink: FaultSink | None = None,
    compute_hosts: ComputeHosts | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Masakari's API v1 over ``db``: notifications go to ``sink`` (the monitor) as raw
    faults; a segment host must be one of ``compute_hosts`` (Nova's), when given."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.tokens = tokens
    store = SegmentStore(db)
    locks: dict[str, asyncio.Lock] = {}

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    @app.middleware("http")
    async def microversion(request: Request, call_next: Any) -> Response:
        try:
            version = versions.requested(request.headers.getlist(versions.HEADER))
        except versions.VersionError as exc:
            return fault_response(exc.status, exc.message)
        request.state.masakari_version = version
        response: Response = await call_next(request)
        response.headers.update(versions.answer_headers(version))
        return response

    @app.exception_handler(Fault)
    async def _fault(_: Request, exc: Fault) -> Response:
        return fault_response(exc.status, exc.message)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return fault_response(exc.status, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return fault_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        return fault_response(400, f"Invalid input for {where}: {first['msg']}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log_unhandled(request.scope, exc)
        rid = request_id(request.scope)
        return fault_response(500, f"internal error; see the controller log for request {rid}")

    # -- versions -------------------------------------------------------------------

    def _root(request: Request) -> str:
        # Where this application is mounted (``/instance-ha``), with the scheme and host
        # the request came to: the clients follow these links.
        mounted = str(request.scope.get("root_path", "")).rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{mounted}"

    @app.get("/")
    async def versions_list(request: Request) -> dict[str, Any]:
        """The API versions (no token needed, as in Masakari)."""
        return {
            "versions": [
                {
                    "id": "v1.0",
                    "status": "CURRENT",
                    "version": versions.text(versions.MAX_VERSION),
                    "min_version": versions.text(versions.MIN_VERSION),
                    "updated": VERSION_UPDATED,
                    "links": [{"rel": "self", "href": f"{_root(request)}/v1/"}],
                }
            ]
        }

    async def version_v1(request: Request) -> dict[str, Any]:
        """Version 1 with its microversions."""
        return {
            "version": {
                "id": "v1.0",
                "status": "CURRENT",
                "version": versions.text(versions.MAX_VERSION),
                "min_version": versions.text(versions.MIN_VERSION),
                "updated": VERSION_UPDATED,
                "links": [
                    {"rel": "self", "href": f"{_root(request)}/v1/"},
                    {
                        "rel": "describedby",
                        "type": "text/html",
                        "href": "https://docs.openstack.org/",
                    },
                ],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.masakari+json;version=1",
                    }
                ],
            }
        }

    app.add_api_route("/v1", version_v1, methods=["GET"])
    app.add_api_route("/v1/", version_v1, methods=["GET"])

    # -- shared lookups -------------------------------------------------------------

    async def segment_or_404(segment_id: str) -> SegmentRow:
        segment = await asyncio.to_thread(store.segment, segment_id)
        if segment is None:
            raise Fault(404, f"Failover segment {segment_id} could not be found.")
        return segment

    async def derive(
        rows: Sequence[NotificationRow],
    ) -> list[tuple[NotificationRow, Any, list[dict[str, Any]]]]:
        """Each notification with the incident it led to and that incident's recoveries."""
        accepted = [n for n in rows if n.outcome == "accepted"]
        if not accepted:
            return [(n, None, []) for n in rows]
        since = min(n.created_at for n in accepted)
        incidents = await asyncio.to_thread(
            store.incidents_of, {n.hostname for n in accepted}, since
        )
        linked = {n.id: views.linked_incident(n, incidents) for n in accepted}
        ids = {inc["id"] for inc in linked.values() if inc is not None}
        recoveries = await asyncio.to_thread(store.recoveries_of, ids)
        out = []
        for n in rows:
            inc = linked.get(n.id)
            out.append((n, inc, recoveries.get(inc["id"], []) if inc is not None else []))
        return out

    async def statuses(
        rows: Sequence[NotificationRow],
    ) -> list[tuple[NotificationRow, str, str | None]]:
        moment = clock()
        return [
            (n, *views.notification_status(n, inc, recs, moment))
            for n, inc, recs in await derive(rows)
        ]

    async def refuse_if_under_recovery(segment: SegmentRow) -> None:
        """Masakari's rule: a segment whose notifications are new, running or in
        error may not change, nor may its hosts."""
        since = now() - timedelta(seconds=views.GIVE_UP_AFTER)
        rows = await asyncio.to_thread(
            store.notifications, segment_uuid=segment.uuid, outcome="accepted"
        )
        recent = [n for n in rows if n.created_at >= since]
        if any(status in views.OPEN_STATUSES for _, status, _ in await statuses(recent)):
            raise Fault(
                409,
                f"Failover segment {segment.uuid} can't be updated as it is in-use to "
                "process notifications.",
            )

    # -- segments -------------------------------------------------------------------

    r = APIRouter()

    @r.get("/segments", dependencies=[Reader])
    async def segment_list(request: Request) -> dict[str, Any]:
        q = request.query_params
        filters: dict[str, Any] = {
            "recovery_method": q.get("recovery_method"),
            "service_type": q.get("service_type"),
            "enabled": _bool_filter(request, "enabled"),
        }
        rows = await asyncio.to_thread(store.segments, **filters)
        by_id = {s.id: s for s in rows}
        chosen = _paged(request, [views.row_dict(s) for s in rows], columns(SegmentRow))
        return {"segments": [views.segment_view(by_id[i["id"]]) for i in chosen]}

    @r.post("/segments", status_code=201)
    async def segment_create(request: Request, principal: Principal = Admin) -> dict[str, Any]:
        data = await _body(request, "segment")
        if "enabled" in data and _version(request) < versions.SEGMENT_ENABLED:
            raise Fault(400, "Invalid input for field/attribute segment: 'enabled' needs 1.2")
        body: schemas.SegmentCreate = _parse(schemas.SegmentCreate, data, "segment")
        try:
            segment = await asyncio.to_thread(
                lambda: store.add_segment(at=now(), **body.model_dump())
            )
        except Conflict:
            raise Fault(409, f"Failover segment with name {body.name} already exists.") from None
        await _audit(db, "segment.created", segment.uuid, principal, {"name": segment.name})
        return {"segment": views.segment_view(segment)}

    @r.get("/segments/{segment_id}", dependencies=[Reader])
    async def segment_show(segment_id: str) -> dict[str, Any]:
        return {"segment": views.segment_view(await segment_or_404(segment_id))}

    @r.put("/segments/{segment_id}")
    async def segment_update(
        request: Request, segment_id: str, principal: Principal = Admin
    ) -> dict[str, Any]:
        data = await _body(request, "segment")
        if "enabled" in data and _version(request) < versions.SEGMENT_ENABLED:
            raise Fault(400, "Invalid input for field/attribute segment: 'enabled' needs 1.2")
        body: schemas.SegmentUpdate = _parse(schemas.SegmentUpdate, data, "segment")
        segment = await segment_or_404(segment_id)
        await refuse_if_under_recovery(segment)
        changes = body.model_dump(exclude_unset=True)
        try:
            updated = await asyncio.to_thread(store.update_segment, segment.uuid, changes, now())
        except Conflict:
            raise Fault(409, f"Failover segment with name {body.name} already exists.") from None
        except NotFound:
            raise Fault(404, f"Failover segment {segment_id} could not be found.") from None
        await _audit(db, "segment.updated", segment.uuid, principal, changes)
        return {"segment": views.segment_view(updated)}

    @r.delete("/segments/{segment_id}", status_code=204)
    async def segment_delete(segment_id: str, principal: Principal = Admin) -> Response:
        segment = await segment_or_404(segment_id)
        await refuse_if_under_recovery(segment)
        try:
            await asyncio.to_thread(store.delete_segment, segment.uuid)
        except NotFound:
            raise Fault(404, f"Failover segment {segment_id} could not be found.") from None
        await _audit(db, "segment.deleted", segment.uuid, principal, {"name": segment.name})
        return Response(status_code=204)

    # -- hosts ----------------------------------------------------------------------

    async def compute_host_or_400(name: str) -> None:
        if compute_hosts is None:
            return
        try:
            known = await compute_hosts()
        except Exception as exc:  # Nova down: say so, never a 500
            raise Fault(
                503, f"cannot ask Nova for its compute hosts ({type(exc).__name__})"
            ) from None
        if name not in known:
            raise Fault(400, f"Compute service of host {name} could not be found.")

    async def host_or_404(segment: SegmentRow, host_id: str) -> SegmentHostRow:
        host = await asyncio.to_thread(store.host, segment.uuid, host_id)
        if host is None:
            raise Fault(404, f"Host {host_id} could not be found.")
        return host

    @r.get("/segments/{segment_id}/hosts", dependencies=[Reader])
    async def host_list(request: Request, segment_id: str) -> dict[str, Any]:
        segment = await segment_or_404(segment_id)
        q = request.query_params
        filters: dict[str, Any] = {
            "name": q.get("name"),
            "type": q.get("type"),
            "control_attributes": q.get("control_attributes"),
            "on_maintenance": _bool_filter(request, "on_maintenance"),
            "reserved": _bool_filter(request, "reserved"),
        }
        rows = await asyncio.to_thread(store.hosts, segment.uuid, **filters)
        by_id = {h.id: h for h in rows}
        allowed = [*columns(SegmentHostRow), "failover_segment_id"]
        items = [{**views.row_dict(h), "failover_segment_id": h.segment_uuid} for h in rows]
        chosen = _paged(request, items, allowed)
        return {"hosts": [views.host_view(by_id[i["id"]], segment) for i in chosen]}

    @r.post("/segments/{segment_id}/hosts", status_code=201)
    async def host_create(
        request: Request, segment_id: str, principal: Principal = Admin
    ) -> dict[str, Any]:
        body: schemas.HostCreate = _parse(schemas.HostCreate, await _body(request, "host"), "host")
        segment = await segment_or_404(segment_id)
        await compute_host_or_400(body.name)
        await refuse_if_under_recovery(segment)
        try:
            host = await asyncio.to_thread(
                lambda: store.add_host(segment.uuid, at=now(), **body.model_dump())
            )
        except Conflict:
            raise Fault(409, f"Host with name {body.name} already exists.") from None
        except NotFound:
            raise Fault(404, f"Failover segment {segment_id} could not be found.") from None
        await _audit(db, "segment.host.created", host.name, principal, {"segment": segment.uuid})
        return {"host": views.host_view(host, segment)}

    @r.get("/segments/{segment_id}/hosts/{host_id}", dependencies=[Reader])
    async def host_show(segment_id: str, host_id: str) -> dict[str, Any]:
        segment = await segment_or_404(segment_id)
        return {"host": views.host_view(await host_or_404(segment, host_id), segment)}

    @r.put("/segments/{segment_id}/hosts/{host_id}")
    async def host_update(
        request: Request, segment_id: str, host_id: str, principal: Principal = Admin
    ) -> dict[str, Any]:
        body: schemas.HostUpdate = _parse(schemas.HostUpdate, await _body(request, "host"), "host")
        segment = await segment_or_404(segment_id)
        host = await host_or_404(segment, host_id)
        changes = body.model_dump(exclude_unset=True)
        if body.name is not None and body.name != host.name:
            await compute_host_or_400(body.name)
        await refuse_if_under_recovery(segment)
        try:
            updated = await asyncio.to_thread(
                store.update_host, segment.uuid, host.uuid, changes, now()
            )
        except Conflict:
            raise Fault(409, f"Host with name {body.name} already exists.") from None
        except NotFound:
            raise Fault(404, f"Host {host_id} could not be found.") from None
        await _audit(db, "segment.host.updated", updated.name, principal, changes)
        return {"host": views.host_view(updated, segment)}

    @r.delete("/segments/{segment_id}/hosts/{host_id}", status_code=204)
    async def host_delete(segment_id: str, host_id: str, principal: Principal = Admin) -> Response:
        segment = await segment_or_404(segment_id)
        host = await host_or_404(segment, host_id)
        await refuse_if_under_recovery(segment)
        try:
            await asyncio.to_thread(store.delete_host, segment.uuid, host.uuid)
        except NotFound:
            raise Fault(404, f"Host {host_id} could not be found.") from None
        await _audit(db, "segment.host.deleted", host.name, principal, {"segment": segment.uuid})
        return Response(status_code=204)

    # -- notifications --------------------------------------------------------------

    @r.post("/notifications", status_code=202)
    async def notification_create(request: Request, principal: Principal = Admin) -> dict[str, Any]:
        received_at = clock()
        body: schemas.NotificationCreate = _parse(
            schemas.NotificationCreate, await _body(request, "notification"), "notification"
        )
        _parse(schemas.PAYLOADS[body.type], body.payload, "notification.payload")
        host = await asyncio.to_thread(store.host_named, body.hostname)
        if host is None:
            raise Fault(400, f"Host with name {body.hostname} could not be found.")
        # One at a time per host, as Masakari does: the duplicate check and the
        # record are one step for concurrent reports of one host.
        lock = locks.setdefault(host.name, asyncio.Lock())
        async with lock:
            row = await _notify(body, host, received_at, principal)
        status, message = views.notification_status(row, None, [], clock())
        return {"notification": views.notification_view(row, status, message)}

    async def _notify(
        body: schemas.NotificationCreate,
        host: SegmentHostRow,
        received_at: float,
        principal: Principal,
    ) -> NotificationRow:
        # Read again under the lock: an earlier notification may have changed it.
        current = await asyncio.to_thread(store.host_named, body.hostname)
        host = current if current is not None else host
        if host.on_maintenance:
            raise Fault(
                409,
                f"Notification received from host {host.name} of type '{body.type}' is "
                "ignored as the host is already under maintenance.",
            )
        generated = body.generated_at
        earlier = await asyncio.to_thread(
            store.notifications,
            since=generated - DUPLICATE_WINDOW,
            hostname=host.name,
            type=body.type,
        )
        if any(n.payload == body.payload for n in earlier):
            raise Fault(
                409,
                f"Notification received from host {host.name} of type '{body.type}' is a "
                f"duplicate of one received within "
                f"{int(DUPLICATE_WINDOW.total_seconds())} seconds.",
            )
        segment = await segment_or_404(host.segment_uuid)
        notification_id = str(uuid.uuid4())
        reading = read_notification(
            notification_id,
            body.type,
            host.name,
            body.payload,
            generated_at=generated.timestamp(),
            received_at=received_at,
        )
        outcome, message = "ignored", reading.reason
        if not segment.enabled:
            message = SEGMENT_DISABLED
        elif reading.fault is None:
            outcome = "finished" if reading.finished else "ignored"
        elif sink is None:
            message = "this controller runs no monitor to take the report"
        else:
            try:
                taken = await sink.submit(reading.fault)
            except UnknownHost:
                message = f"medevac does not watch host {host.name} (it is not in its [hosts])"
            else:
                if isinstance(taken, Ignored) and taken.under_way:
                    outcome, message = "accepted", None  # it follows the incident under way
                elif isinstance(taken, Ignored):
                    message = taken.reason
                elif taken:
                    outcome, message = "accepted", None
                else:
                    message = "a duplicate of a report already taken"
        row = await asyncio.to_thread(
            lambda: store.add_notification(
                notification_uuid=notification_id,
                type=body.type,
                host=host,
                generated_time=generated,
                payload=body.payload,
                outcome=outcome,
                message=message,
                at=datetime.fromtimestamp(received_at, UTC),
                maintenance=reading.maintenance and outcome == "accepted",
            )
        )
        detail = {"type": body.type, "outcome": outcome, "notification_uuid": row.uuid}
        await _audit(db, "masakari.notification", host.name, principal, detail)
        return row

    async def notification_or_404(notification_id: str) -> NotificationRow:
        row = await asyncio.to_thread(store.notification, notification_id)
        if row is None:
            raise Fault(404, f"Notification {notification_id} could not be found.")
        return row

    @r.get("/notifications", dependencies=[Reader])
    async def notification_list(request: Request) -> dict[str, Any]:
        q = request.query_params
        since: datetime | None = None
        if (raw := q.get("generated-since")) is not None:
            try:
                since = schemas.parse_time(raw)
            except ValueError:
                raise Fault(400, f"Invalid generated-since: {raw[:64]}") from None
        filters = {"source_host_uuid": q.get("source_host_uuid"), "type": q.get("type")}
        rows = await asyncio.to_thread(lambda: store.notifications(since=since, **filters))
        wanted = q.get("status")
        items, views_by_id = [], {}
        for n, status, message in await statuses(rows):
            if wanted is not None and status != wanted:
                continue
            views_by_id[n.id] = views.notification_view(n, status, message)
            items.append({**views.row_dict(n), "status": status})
        allowed = [*columns(NotificationRow), "status", "failover_segment_uuid"]
        chosen = _paged(request, items, allowed)
        return {"notifications": [views_by_id[i["id"]] for i in chosen]}

    @r.get("/notifications/{notification_id}", dependencies=[Reader])
    async def notification_show(request: Request, notification_id: str) -> dict[str, Any]:
        row = await notification_or_404(notification_id)
        ((_, inc, recs),) = await derive([row])
        status, message = views.notification_status(row, inc, recs, clock())
        view = views.notification_view(row, status, message)
        if _version(request) >= versions.PROGRESS_DETAILS:
            view["recovery_workflow_details"] = views.workflow_details(inc, recs)
        return {"notification": view}

    async def moves_of(notification_id: str) -> list[dict[str, Any]]:
        row = await notification_or_404(notification_id)
        if row.type != "COMPUTE_HOST":
            raise Fault(
                400,
                f"Notification {notification_id} is of type {row.type}: only "
                "COMPUTE_HOST notifications have VM moves.",
            )
        ((_, _, recs),) = await derive([row])
        return views.vmoves(row, recs)

    @r.get("/notifications/{notification_id}/vmoves", dependencies=[Reader])
    async def vmove_list(request: Request, notification_id: str) -> dict[str, Any]:
        moves = await moves_of(notification_id)
        q = request.query_params
        for name in ("status", "type"):
            if (wanted := q.get(name)) is not None:
                moves = [m for m in moves if m[name] == wanted]
        return {"vmoves": _paged(request, moves, views.VMOVE_KEYS)}

    @r.get("/notifications/{notification_id}/vmoves/{vmove_id}", dependencies=[Reader])
    async def vmove_show(notification_id: str, vmove_id: str) -> dict[str, Any]:
        for move in await moves_of(notification_id):
            if move["uuid"] == vmove_id:
                return {"vmove": move}
        raise Fault(404, f"VM move {vmove_id} could not be found.")

    app.include_router(r, prefix="/v1")
    app.include_router(r, prefix="/v1/{project_id:masakari_project}")
    return app


async def _audit(
    db: Database, kind: str, subject: str, principal: Principal, detail: dict[str, Any]
) -> None:
    await asyncio.to_thread(db.record_audit, kind, subject, principal.name, detail)

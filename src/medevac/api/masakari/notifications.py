"""Masakari's notifications and VM moves: a report goes to the monitor as a raw fault;
its status, progress and VM moves are derived from what it led to (see ``views``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request

from medevac.api.auth import Principal
from medevac.api.masakari import schemas, versions, views
from medevac.api.masakari.common import (
    Admin,
    Context,
    Fault,
    Reader,
    body,
    paged,
    parse,
    version,
)
from medevac.monitor.masakari import read_notification
from medevac.monitor.raw import Ignored, UnknownHost
from medevac.storage.segments import NotificationRow, SegmentHostRow, SegmentRow, columns

DUPLICATE_WINDOW = timedelta(seconds=180)  # duplicate_notification_detection_interval
SEGMENT_DISABLED = "Recovery aborted: the segment HA is disabled."

Derived = tuple[NotificationRow, Any, list[dict[str, Any]]]


async def derive(ctx: Context, rows: Sequence[NotificationRow]) -> list[Derived]:
    """Each notification with the incident it led to and that incident's recoveries."""
    accepted = [n for n in rows if n.outcome == "accepted"]
    if not accepted:
        return [(n, None, []) for n in rows]
    since = min(n.created_at for n in accepted)
    hosts = {n.hostname for n in accepted}
    incidents = await asyncio.to_thread(ctx.store.incidents_of, hosts, since)
    linked = {n.id: views.linked_incident(n, incidents) for n in accepted}
    ids = {inc["id"] for inc in linked.values() if inc is not None}
    recoveries = await asyncio.to_thread(ctx.store.recoveries_of, ids)
    out: list[Derived] = []
    for n in rows:
        inc = linked.get(n.id)
        out.append((n, inc, recoveries.get(inc["id"], []) if inc is not None else []))
    return out


async def statuses(
    ctx: Context, rows: Sequence[NotificationRow]
) -> list[tuple[NotificationRow, str, str | None]]:
    moment = ctx.clock()
    return [
        (n, *views.notification_status(n, inc, recs, moment))
        for n, inc, recs in await derive(ctx, rows)
    ]


async def refuse_if_under_recovery(ctx: Context, segment: SegmentRow) -> None:
    """Masakari's rule: a segment whose notifications are new, running or in error
    may not change, nor may its hosts (409)."""
    since = ctx.now() - timedelta(seconds=views.GIVE_UP_AFTER)
    rows = await asyncio.to_thread(
        ctx.store.notifications, segment_uuid=segment.uuid, outcome="accepted"
    )
    recent = [n for n in rows if n.created_at >= since]
    if any(status in views.OPEN_STATUSES for _, status, _ in await statuses(ctx, recent)):
        raise Fault(
            409,
            f"Failover segment {segment.uuid} can't be updated as it is in-use to "
            "process notifications.",
        )


async def _take(
    ctx: Context,
    notice: schemas.NotificationCreate,
    host: SegmentHostRow,
    received_at: float,
    principal: Principal,
) -> NotificationRow:
    """Check a notification against Masakari's rules, hand its fault to the monitor,
    record it with what the monitor made of it."""
    # Read again under the host's lock: an earlier notification may have changed it.
    current = await asyncio.to_thread(ctx.store.host_named, notice.hostname)
    host = current if current is not None else host
    if host.on_maintenance:
        raise Fault(
            409,
            f"Notification received from host {host.name} of type '{notice.type}' is "
            "ignored as the host is already under maintenance.",
        )
    generated = notice.generated_at
    earlier = await asyncio.to_thread(
        ctx.store.notifications,
        since=generated - DUPLICATE_WINDOW,
        hostname=host.name,
        type=notice.type,
    )
    if any(n.payload == notice.payload for n in earlier):
        raise Fault(
            409,
            f"Notification received from host {host.name} of type '{notice.type}' is a "
            f"duplicate of one received within {int(DUPLICATE_WINDOW.total_seconds())} "
            "seconds.",
        )
    segment = await ctx.segment_or_404(host.segment_uuid)
    notification_id = str(uuid.uuid4())
    reading = read_notification(
        notification_id,
        notice.type,
        host.name,
        notice.payload,
        generated_at=generated.timestamp(),
        received_at=received_at,
    )
    outcome, message = "ignored", reading.reason
    if not segment.enabled:
        message = SEGMENT_DISABLED
    elif reading.fault is None:
        outcome = "finished" if reading.finished else "ignored"
    elif ctx.sink is None:
        message = "this controller runs no monitor to take the report"
    else:
        try:
            taken = await ctx.sink.submit(reading.fault)
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
        lambda: ctx.store.add_notification(
            notification_uuid=notification_id,
            type=notice.type,
            host=host,
            generated_time=generated,
            payload=notice.payload,
            outcome=outcome,
            message=message,
            at=datetime.fromtimestamp(received_at, UTC),
            maintenance=reading.maintenance and outcome == "accepted",
        )
    )
    detail = {"type": notice.type, "outcome": outcome, "notification_uuid": row.uuid}
    await ctx.audit("masakari.notification", host.name, principal, detail)
    return row


def notifications_router(ctx: Context) -> APIRouter:
    """``/notifications`` and their ``/vmoves``."""
    r = APIRouter()

    @r.post("/notifications", status_code=202)
    async def notification_create(request: Request, principal: Principal = Admin) -> dict[str, Any]:
        received_at = ctx.clock()
        wrapper = "notification"
        notice: schemas.NotificationCreate = parse(
            schemas.NotificationCreate, await body(request, wrapper), wrapper
        )
        parse(schemas.PAYLOADS[notice.type], notice.payload, f"{wrapper}.payload")
        host = await asyncio.to_thread(ctx.store.host_named, notice.hostname)
        if host is None:
            raise Fault(400, f"Host with name {notice.hostname} could not be found.")
        async with ctx.locks.setdefault(host.name, asyncio.Lock()):
            row = await _take(ctx, notice, host, received_at, principal)
        status, message = views.notification_status(row, None, [], ctx.clock())
        return {"notification": views.notification_view(row, status, message)}

    async def notification_or_404(notification_id: str) -> NotificationRow:
        row = await asyncio.to_thread(ctx.store.notification, notification_id)
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
        rows = await asyncio.to_thread(lambda: ctx.store.notifications(since=since, **filters))
        wanted = q.get("status")
        items, by_id = [], {}
        for n, status, message in await statuses(ctx, rows):
            if wanted is not None and status != wanted:
                continue
            by_id[n.id] = views.notification_view(n, status, message)
            items.append({**views.row_dict(n), "status": status})
        allowed = [*columns(NotificationRow), "status", "failover_segment_uuid"]
        return {"notifications": [by_id[i["id"]] for i in paged(request, items, allowed)]}

    @r.get("/notifications/{notification_id}", dependencies=[Reader])
    async def notification_show(request: Request, notification_id: str) -> dict[str, Any]:
        row = await notification_or_404(notification_id)
        ((_, inc, recs),) = await derive(ctx, [row])
        status, message = views.notification_status(row, inc, recs, ctx.clock())
        view = views.notification_view(row, status, message)
        if version(request) >= versions.PROGRESS_DETAILS:
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
        ((_, _, recs),) = await derive(ctx, [row])
        return views.vmoves(row, recs)

    @r.get("/notifications/{notification_id}/vmoves", dependencies=[Reader])
    async def vmove_list(request: Request, notification_id: str) -> dict[str, Any]:
        moves = await moves_of(notification_id)
        q = request.query_params
        for name in ("status", "type"):
            if (wanted := q.get(name)) is not None:
                moves = [m for m in moves if m[name] == wanted]
        return {"vmoves": paged(request, moves, views.VMOVE_KEYS)}

    @r.get("/notifications/{notification_id}/vmoves/{vmove_id}", dependencies=[Reader])
    async def vmove_show(notification_id: str, vmove_id: str) -> dict[str, Any]:
        for move in await moves_of(notification_id):
            if move["uuid"] == vmove_id:
                return {"vmove": move}
        raise Fault(404, f"VM move {vmove_id} could not be found.")

    return r

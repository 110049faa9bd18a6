"""Masakari's failover segments and their hosts: medevac's host groups, in the store."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response

from medevac.api.auth import Principal
from medevac.api.masakari import schemas, versions, views
from medevac.api.masakari.common import (
    Admin,
    Context,
    Fault,
    Reader,
    body,
    bool_filter,
    paged,
    parse,
    version,
)
from medevac.api.masakari.notifications import refuse_if_under_recovery
from medevac.storage.segments import Conflict, NotFound, SegmentHostRow, SegmentRow, columns


def _enabled_needs_1_2(request: Request, data: dict[str, Any]) -> None:
    if "enabled" in data and version(request) < versions.SEGMENT_ENABLED:
        raise Fault(400, "Invalid input for field/attribute segment: 'enabled' needs 1.2")


def segments_router(ctx: Context) -> APIRouter:
    """``/segments`` and ``/segments/{id}/hosts``."""
    r = APIRouter()
    store = ctx.store

    @r.get("/segments", dependencies=[Reader])
    async def segment_list(request: Request) -> dict[str, Any]:
        q = request.query_params
        filters: dict[str, Any] = {
            "recovery_method": q.get("recovery_method"),
            "service_type": q.get("service_type"),
            "enabled": bool_filter(request, "enabled"),
        }
        rows = await asyncio.to_thread(store.segments, **filters)
        by_id = {s.id: s for s in rows}
        chosen = paged(request, [views.row_dict(s) for s in rows], columns(SegmentRow))
        return {"segments": [views.segment_view(by_id[i["id"]]) for i in chosen]}

    @r.post("/segments", status_code=201)
    async def segment_create(request: Request, principal: Principal = Admin) -> dict[str, Any]:
        data = await body(request, "segment")
        _enabled_needs_1_2(request, data)
        new: schemas.SegmentCreate = parse(schemas.SegmentCreate, data, "segment")
        try:
            segment = await asyncio.to_thread(
                lambda: store.add_segment(at=ctx.now(), **new.model_dump())
            )
        except Conflict:
            raise Fault(409, f"Failover segment with name {new.name} already exists.") from None
        await ctx.audit("segment.created", segment.uuid, principal, {"name": segment.name})
        return {"segment": views.segment_view(segment)}

    @r.get("/segments/{segment_id}", dependencies=[Reader])
    async def segment_show(segment_id: str) -> dict[str, Any]:
        return {"segment": views.segment_view(await ctx.segment_or_404(segment_id))}

    @r.put("/segments/{segment_id}")
    async def segment_update(
        request: Request, segment_id: str, principal: Principal = Admin
    ) -> dict[str, Any]:
        data = await body(request, "segment")
        _enabled_needs_1_2(request, data)
        change: schemas.SegmentUpdate = parse(schemas.SegmentUpdate, data, "segment")
        segment = await ctx.segment_or_404(segment_id)
        await refuse_if_under_recovery(ctx, segment)
        changes = change.model_dump(exclude_unset=True)
        try:
            updated = await asyncio.to_thread(
                store.update_segment, segment.uuid, changes, ctx.now()
            )
        except Conflict:
            raise Fault(409, f"Failover segment with name {change.name} already exists.") from None
        except NotFound:
            raise Fault(404, f"Failover segment {segment_id} could not be found.") from None
        await ctx.audit("segment.updated", segment.uuid, principal, changes)
        return {"segment": views.segment_view(updated)}

    @r.delete("/segments/{segment_id}", status_code=204)
    async def segment_delete(segment_id: str, principal: Principal = Admin) -> Response:
        segment = await ctx.segment_or_404(segment_id)
        await refuse_if_under_recovery(ctx, segment)
        try:
            await asyncio.to_thread(store.delete_segment, segment.uuid)
        except NotFound:
            raise Fault(404, f"Failover segment {segment_id} could not be found.") from None
        await ctx.audit("segment.deleted", segment.uuid, principal, {"name": segment.name})
        return Response(status_code=204)

    # -- hosts ----------------------------------------------------------------------

    async def compute_host_or_400(name: str) -> None:
        if ctx.compute_hosts is None:
            return
        try:
            known = await ctx.compute_hosts()
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
        segment = await ctx.segment_or_404(segment_id)
        q = request.query_params
        filters: dict[str, Any] = {
            "name": q.get("name"),
            "type": q.get("type"),
            "control_attributes": q.get("control_attributes"),
            "on_maintenance": bool_filter(request, "on_maintenance"),
            "reserved": bool_filter(request, "reserved"),
        }
        rows = await asyncio.to_thread(store.hosts, segment.uuid, **filters)
        by_id = {h.id: h for h in rows}
        allowed = [*columns(SegmentHostRow), "failover_segment_id"]
        items = [{**views.row_dict(h), "failover_segment_id": h.segment_uuid} for h in rows]
        chosen = paged(request, items, allowed)
        return {"hosts": [views.host_view(by_id[i["id"]], segment) for i in chosen]}

    @r.post("/segments/{segment_id}/hosts", status_code=201)
    async def host_create(
        request: Request, segment_id: str, principal: Principal = Admin
    ) -> dict[str, Any]:
        new: schemas.HostCreate = parse(schemas.HostCreate, await body(request, "host"), "host")
        segment = await ctx.segment_or_404(segment_id)
        await compute_host_or_400(new.name)
        await refuse_if_under_recovery(ctx, segment)
        try:
            host = await asyncio.to_thread(
                lambda: store.add_host(segment.uuid, at=ctx.now(), **new.model_dump())
            )
        except Conflict:
            raise Fault(409, f"Host with name {new.name} already exists.") from None
        except NotFound:
            raise Fault(404, f"Failover segment {segment_id} could not be found.") from None
        await ctx.audit("segment.host.created", host.name, principal, {"segment": segment.uuid})
        return {"host": views.host_view(host, segment)}

    @r.get("/segments/{segment_id}/hosts/{host_id}", dependencies=[Reader])
    async def host_show(segment_id: str, host_id: str) -> dict[str, Any]:
        segment = await ctx.segment_or_404(segment_id)
        return {"host": views.host_view(await host_or_404(segment, host_id), segment)}

    @r.put("/segments/{segment_id}/hosts/{host_id}")
    async def host_update(
        request: Request, segment_id: str, host_id: str, principal: Principal = Admin
    ) -> dict[str, Any]:
        change: schemas.HostUpdate = parse(schemas.HostUpdate, await body(request, "host"), "host")
        segment = await ctx.segment_or_404(segment_id)
        host = await host_or_404(segment, host_id)
        changes = change.model_dump(exclude_unset=True)
        if change.name is not None and change.name != host.name:
            await compute_host_or_400(change.name)
        await refuse_if_under_recovery(ctx, segment)
        try:
            updated = await asyncio.to_thread(
                store.update_host, segment.uuid, host.uuid, changes, ctx.now()
            )
        except Conflict:
            raise Fault(409, f"Host with name {change.name} already exists.") from None
        except NotFound:
            raise Fault(404, f"Host {host_id} could not be found.") from None
        await ctx.audit("segment.host.updated", updated.name, principal, changes)
        return {"host": views.host_view(updated, segment)}

    @r.delete("/segments/{segment_id}/hosts/{host_id}", status_code=204)
    async def host_delete(segment_id: str, host_id: str, principal: Principal = Admin) -> Response:
        segment = await ctx.segment_or_404(segment_id)
        host = await host_or_404(segment, host_id)
        await refuse_if_under_recovery(ctx, segment)
        try:
            await asyncio.to_thread(store.delete_host, segment.uuid, host.uuid)
        except NotFound:
            raise Fault(404, f"Host {host_id} could not be found.") from None
        await ctx.audit("segment.host.deleted", host.name, principal, {"segment": segment.uuid})
        return Response(status_code=204)

    return r

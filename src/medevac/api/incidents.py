"""Incidents and the inspector's state: ``/v1/incidents``, ``/v1/inspector``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.api.paging import Paged
from medevac.config import Role
from medevac.inspector.inspector import Inspector
from medevac.notifier.notifier import Notifier
from medevac.profiler.profile import Profile, incident_profile
from medevac.profiler.render import svg_chart
from medevac.storage.records import IncidentStore, RecoveryStore

AdminOrReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.READER))]


def incidents_router(
    store: IncidentStore, recoveries: RecoveryStore, inspector: Inspector, notifier: Notifier
) -> APIRouter:
    router = APIRouter(tags=["inspector"])

    def fresh(body: dict[str, Any]) -> dict[str, Any]:
        live = inspector.open.get(body["host"])
        return live.as_dict() if live is not None and live.id == body["id"] else body

    @router.get("/v1/incidents")
    async def list_incidents(
        _: AdminOrReader,
        page: Paged,
        host: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        """Incidents, newest first: host, state, verdicts, actions and results, events."""
        # Open incidents live in the inspector: merge the first offset + limit of both.
        wanted = page.offset + page.limit
        rows = await asyncio.to_thread(store.recent, host=host, state=state, limit=wanted)
        known = {r["id"] for r in rows}
        live = [
            i.as_dict()
            for i in inspector.open.values()
            if i.id not in known
            and (host is None or i.host == host)
            and (state is None or i.state.value == state)
        ]
        found = live + [fresh(r) for r in rows]
        found.sort(key=lambda b: b["opened_at"], reverse=True)
        return {"incidents": page.of(found)}

    async def incident(incident_id: str) -> dict[str, Any]:
        for inc in inspector.open.values():
            if inc.id == incident_id:
                return inc.as_dict()
        body = await asyncio.to_thread(store.get, incident_id)
        if body is None:
            raise ApiError(404, f"incident {incident_id} not found")
        return body

    @router.get("/v1/incidents/{incident_id}")
    async def get_incident(incident_id: str, _: AdminOrReader) -> dict[str, Any]:
        return await incident(incident_id)

    async def profile_of(
        incident_id: str, fault_at: float | None
    ) -> tuple[dict[str, Any], Profile]:
        body = await incident(incident_id)
        recovery = None
        if body.get("recovery_id"):
            recovery = await asyncio.to_thread(recoveries.get, body["recovery_id"])
        try:
            return body, incident_profile(body, recovery, fault_at=fault_at)
        except ValueError as exc:
            raise ApiError(409, f"incident {incident_id} has no profile yet: {exc}") from exc

    @router.get("/v1/incidents/{incident_id}/profile")
    async def get_profile(
        incident_id: str,
        _: AdminOrReader,
        fault_at: Annotated[float | None, Query(gt=0)] = None,
    ) -> dict[str, Any]:
        """The incident's checkpoints (T00 to T09, R1 to R3), and per goal (alarm
        received, state corrected, servers recovered) the components' time on the
        critical path. ``fault_at`` (epoch seconds): the known fault time as T00."""
        body, profile = await profile_of(incident_id, fault_at)
        return {"incident_id": incident_id, "host": body["host"], **profile.as_dict()}

    @router.get(
        "/v1/incidents/{incident_id}/profile.svg",
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}}},
    )
    async def get_profile_chart(
        incident_id: str,
        _: AdminOrReader,
        fault_at: Annotated[float | None, Query(gt=0)] = None,
    ) -> Response:
        """The profile's chart (the checkpoints as a Gantt chart, the critical path
        solid), as SVG."""
        _body, profile = await profile_of(incident_id, fault_at)
        svg = await asyncio.to_thread(svg_chart, profile)
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @router.get("/v1/inspector")
    async def inspector_state(_: AdminOrReader) -> dict[str, Any]:
        """Topology cache, guard holds, notifier counters and cloud calls made."""
        return {
            "topology": inspector.topology.stats(),
            "guard": inspector.guard.state(inspector.clock()),
            "open_incidents": len(inspector.open),
            "notifier": notifier.stats(),
            "cloud_calls": dict(getattr(inspector.executor.cloud, "calls", {})),
        }

    return router

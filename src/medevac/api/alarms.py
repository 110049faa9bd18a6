"""Aodh v2 event alarms: ``/v2/alarms``, wire-compatible with Aodh's clients.

Members create and see only their own project's alarms (and those only ever match
events about their project's resources); readers see every alarm; admins do all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response
from pydantic import ValidationError

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.config import Role
from medevac.notifier.alarms import STATES, Alarm, AlarmSpec, QueryError, check_action_url
from medevac.notifier.events import iso
from medevac.notifier.notifier import AlarmNotFound, Notifier

AnyRole = Annotated[Principal, Depends(require())]
Writer = Annotated[Principal, Depends(require(Role.ADMIN, Role.MEMBER))]


def _scope(principal: Principal) -> str | None:
    """The project whose alarms the caller sees; None: all of them."""
    return None if principal.role in (Role.ADMIN, Role.READER) else principal.project_id


def alarms_router(notifier: Notifier, own_addresses: Iterable[tuple[str, int]]) -> APIRouter:
    router = APIRouter(prefix="/v2/alarms", tags=["alarms (Aodh v2)"])
    own = list(own_addresses)

    def visible(alarm_id: str, principal: Principal) -> Alarm:
        try:
            alarm = notifier.get(alarm_id)
        except AlarmNotFound:
            raise ApiError(404, f"alarm {alarm_id} not found") from None
        scope = _scope(principal)
        if scope is not None and alarm.project_id != scope:
            raise ApiError(404, f"alarm {alarm_id} not found")  # never confirm it exists
        return alarm

    def validate(body: dict[str, Any], principal: Principal) -> tuple[AlarmSpec, str | None]:
        if not isinstance(body, dict):
            raise ApiError(400, "(body): an alarm must be a JSON object")
        try:
            spec = AlarmSpec.model_validate(body)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
                for e in exc.errors()
            ]
            raise ApiError(
                400, f"{errors[0]['field']}: {errors[0]['problem']}", errors=errors
            ) from None
        try:
            for term in spec.event_rule.query:
                term.typed_value()
        except QueryError as exc:
            raise ApiError(400, f"event_rule.query: {exc}") from None
        for url in spec.actions():
            try:
                check_action_url(url, own)
            except ValueError as exc:
                raise ApiError(400, f"actions: {exc}") from None
        project = spec.project_id
        if principal.role is Role.MEMBER:
            if project is not None and project != principal.project_id:
                raise ApiError(403, "a member may only create alarms in its own project")
            project = principal.project_id
        return spec, project

    @router.post("", status_code=201)
    async def create(principal: Writer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        """Create an event alarm."""
        spec, project = validate(body, principal)
        alarm = await notifier.create(spec, project)
        return alarm.as_api()

    @router.get("")
    async def list_alarms(principal: AnyRole) -> list[dict[str, Any]]:
        """The alarms the caller may see."""
        return [a.as_api() for a in notifier.visible_to(_scope(principal))]

    @router.get("/{alarm_id}")
    async def get(alarm_id: str, principal: AnyRole) -> dict[str, Any]:
        return visible(alarm_id, principal).as_api()

    @router.put("/{alarm_id}")
    async def replace(
        alarm_id: str, principal: Writer, body: Annotated[Any, Body()]
    ) -> dict[str, Any]:
        """Replace an alarm's definition (Aodh's PUT)."""
        old = visible(alarm_id, principal)
        spec, project = validate(body, principal)
        if project != old.project_id and not principal.is_admin:
            raise ApiError(403, "an alarm cannot move to another project")
        return (await notifier.replace(alarm_id, spec)).as_api()

    @router.delete("/{alarm_id}", status_code=204)
    async def delete(alarm_id: str, principal: Writer) -> Response:
        visible(alarm_id, principal)
        await notifier.delete(alarm_id)
        return Response(status_code=204)

    @router.get("/{alarm_id}/state")
    async def get_state(alarm_id: str, principal: AnyRole) -> str:
        return visible(alarm_id, principal).state

    @router.put("/{alarm_id}/state")
    async def set_state(alarm_id: str, principal: Writer, body: Annotated[Any, Body()]) -> str:
        """Set the state by hand: the body is a JSON string (Aodh's form)."""
        visible(alarm_id, principal)
        if body not in STATES:
            raise ApiError(400, f"state: must be one of {', '.join(map(json.dumps, STATES))}")
        alarm = await notifier.set_state(alarm_id, body, f"set by {principal.name}")
        return alarm.state

    @router.get("/{alarm_id}/history")
    async def history(alarm_id: str, principal: AnyRole) -> list[dict[str, Any]]:
        visible(alarm_id, principal)
        return [
            {
                "event_id": h.event_id,
                "alarm_id": h.alarm_id,
                "type": h.type,
                "detail": json.dumps(h.detail),
                "timestamp": iso(h.timestamp),
                "project_id": h.project_id,
                "user_id": None,
                "on_behalf_of": h.project_id,
            }
            for h in await notifier.history(alarm_id)
        ]

    return router

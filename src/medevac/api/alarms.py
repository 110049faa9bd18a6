"""Aodh v2 event alarms: ``/v2/alarms``, ``/v2/query/alarms[/history]`` and
``/v2/capabilities``, wire-compatible with Aodh's clients (errors in Aodh's shape).

Members create and see only their own project's alarms and history (and those alarms
only ever match events about their project's resources); readers see every alarm;
admins do all.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import ValidationError

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.config import Role
from medevac.notifier.alarms import (
    STATES,
    ActionTargets,
    Alarm,
    AlarmSpec,
    IPAddress,
    QueryError,
    action_host,
    check_action_addresses,
    check_action_url,
    literal_address,
    mask_url_credentials,
)
from medevac.notifier.events import iso
from medevac.notifier.notifier import AlarmNotFound, Notifier
from medevac.notifier.query import (
    ALARM,
    HISTORY,
    InvalidQuery,
    NotAuthorized,
    parse_complex_query,
    parse_list_query,
)
from medevac.storage.models import URL_LENGTH
from medevac.storage.records import HistoryRow

AnyRole = Annotated[Principal, Depends(require())]
Writer = Annotated[Principal, Depends(require(Role.ADMIN, Role.MEMBER))]

# What Aodh returns about an alarm but sets itself: accepted back (a client PUTs the
# alarm it read) and ignored, as Aodh does.
READ_ONLY_FIELDS = (
    "alarm_id",
    "state_reason",
    "state_timestamp",
    "timestamp",
    "evaluate_timestamp",
)
# Aodh's capabilities, flattened as Aodh flattens them.
CAPABILITIES = {
    "api": {
        "alarms:query:simple": True,
        "alarms:query:complex": True,
        "alarms:history:query:simple": True,
        "alarms:history:query:complex": True,
    },
    "alarm_storage": {"storage:production_ready": True},
}


def _scope(principal: Principal) -> str | None:
    """The project whose alarms the caller sees; None: all of them."""
    return None if principal.role in (Role.ADMIN, Role.READER) else principal.project_id


ACTION_FIELDS = ("alarm_actions", "ok_actions", "insufficient_data_actions")


def sees_credentials(principal: Principal, project_id: str | None) -> bool:
    """Whether ``principal`` may read the credentials in a project's action URLs: admins
    and that project's members; readers get them masked."""
    return principal.is_admin or (
        principal.role is Role.MEMBER and principal.project_id == project_id
    )


def shown(body: dict[str, Any], principal: Principal, project_id: str | None) -> dict[str, Any]:
    """An alarm (or a history detail holding one) as ``principal`` may read it."""
    if sees_credentials(principal, project_id):
        return body
    masked = dict(body)
    for name in ACTION_FIELDS:
        if isinstance(masked.get(name), list):
            masked[name] = [mask_url_credentials(str(u)) for u in masked[name]]
    return masked


def _change(h: HistoryRow, principal: Principal) -> dict[str, Any]:
    """One history entry as Aodh answers it."""
    return {
        "event_id": h.event_id,
        "alarm_id": h.alarm_id,
        "type": h.type,
        "detail": json.dumps(shown(h.detail, principal, h.project_id)),
        "timestamp": iso(h.timestamp),
        "project_id": h.project_id,
        "user_id": None,
        "on_behalf_of": h.project_id,
    }


def _query_error(exc: InvalidQuery | NotAuthorized) -> ApiError:
    return ApiError(403 if isinstance(exc, NotAuthorized) else 400, str(exc))


async def resolve(host: str, port: int, within: float) -> list[IPAddress]:
    """The addresses ``host`` stands for; ValueError when it does not resolve ``within``
    seconds."""
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), within
        )
    except (OSError, TimeoutError):
        raise ValueError(f"host {host!r} does not resolve within {within:g} s") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = literal_address(str(sockaddr[0]).partition("%")[0])
        if address is not None:
            addresses.append(address)
    return addresses


def alarms_router(
    notifier: Notifier,
    own_addresses: Iterable[tuple[str, int]],
    *,
    targets: ActionTargets | None = None,
    resolve_timeout: float = 2.0,
    quota: int = 1000,
) -> APIRouter:
    """Aodh's alarm routes over ``notifier``; actions may not send to ``own_addresses``
    (the controller) nor where ``targets`` refuses; ``quota`` alarms per project."""
    router = APIRouter(prefix="/v2", tags=["alarms (Aodh v2)"])
    own = list(own_addresses)
    allowed = targets or ActionTargets()
    creating = asyncio.Lock()  # the quota's count and the creation, one at a time

    async def check_action(url: str) -> None:
        check_action_url(url, own, allowed)
        host, port = action_host(url)
        if literal_address(host) is None:
            try:
                addresses = await resolve(host, port, resolve_timeout)
            except ValueError as exc:
                raise ValueError(f"action {mask_url_credentials(url)!r}: {exc}") from None
            check_action_addresses(url, addresses, allowed)

    def answer(alarm: Alarm, principal: Principal) -> dict[str, Any]:
        return shown(alarm.as_api(), principal, alarm.project_id)

    def answers(principal: Principal, scope: str | None) -> list[dict[str, Any]]:
        return [answer(a, principal) for a in notifier.visible_to(scope)]

    def visible(alarm_id: str, principal: Principal) -> Alarm:
        try:
            alarm = notifier.get(alarm_id)
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found") from None
        scope = _scope(principal)
        if scope is not None and alarm.project_id != scope:
            raise ApiError(404, f"Alarm {alarm_id} not found")  # never confirm it exists
        return alarm

    async def validate(body: dict[str, Any], principal: Principal) -> tuple[AlarmSpec, str | None]:
        if not isinstance(body, dict):
            raise ApiError(400, "(body): an alarm must be a JSON object")
        body = {k: v for k, v in body.items() if k not in READ_ONLY_FIELDS}
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
        for name in ACTION_FIELDS:
            for n, url in enumerate(getattr(spec, name)):
                if len(url) > URL_LENGTH:  # each delivery stores it: never quoted back
                    where = f"{name}.{n}"
                    problem = (
                        f"an action URL may be at most {URL_LENGTH} characters, not {len(url)}"
                    )
                    raise ApiError(
                        400, f"{where}: {problem}", errors=[{"field": where, "problem": problem}]
                    )
        project = spec.project_id
        if principal.role is Role.MEMBER:
            if project is not None and project != principal.project_id:
                raise ApiError(403, "a member may only create alarms in its own project")
            project = principal.project_id
        for url in spec.actions():
            try:
                await check_action(url)
            except ValueError as exc:
                raise ApiError(400, f"actions: {exc}") from None
        return spec, project

    @router.post("/alarms", status_code=201)
    async def create(principal: Writer, body: Annotated[Any, Body()]) -> dict[str, Any]:
        """Create an event alarm (403 past the project's quota, ``api.alarm_quota``)."""
        spec, project = await validate(body, principal)
        async with creating:
            held = sum(1 for a in notifier.visible_to(project) if a.project_id == project)
            if held >= quota:
                raise ApiError(
                    403, f"Alarm quota exceeded for project {project or '(operators)'}: {quota}"
                )
            alarm = await notifier.create(spec, project)
        return answer(alarm, principal)

    @router.get("/alarms")
    async def list_alarms(request: Request, principal: AnyRole) -> list[Any]:
        """The alarms the caller may see, filtered by Aodh's ``q.field``/``q.op``/
        ``q.value``/``q.type`` (eq on Aodh's fields), ``sort``, ``limit`` and ``marker``."""
        scope = _scope(principal)
        try:
            query = parse_list_query(request.query_params.multi_items())
            if scope is not None:
                if query.all_projects:
                    raise ApiError(403, "a member may only list its own project's alarms")
                for project in query.projects():
                    if project != scope:
                        raise NotAuthorized(project)
            return query.run(answers(principal, scope))
        except (InvalidQuery, NotAuthorized) as exc:
            raise _query_error(exc) from None

    @router.post("/query/alarms")
    async def query_alarms(principal: AnyRole, body: Annotated[Any, Body()]) -> list[Any]:
        """Aodh's complex query over the alarms the caller may see."""
        scope = _scope(principal)
        try:
            query = parse_complex_query(body, ALARM, scope)
            return query.run(answers(principal, scope))
        except (InvalidQuery, NotAuthorized) as exc:
            raise _query_error(exc) from None

    @router.post("/query/alarms/history")
    async def query_history(principal: AnyRole, body: Annotated[Any, Body()]) -> list[Any]:
        """Aodh's complex query over the history the caller may see, deleted alarms'
        included."""
        scope = _scope(principal)
        try:
            query = parse_complex_query(body, HISTORY, scope)
            changes = await notifier.all_history(scope)
            return await asyncio.to_thread(query.run, [_change(h, principal) for h in changes])
        except (InvalidQuery, NotAuthorized) as exc:
            raise _query_error(exc) from None

    @router.get("/capabilities")
    @router.get("/capabilities/", include_in_schema=False)  # where Aodh's client asks
    async def capabilities(_: AnyRole) -> dict[str, Any]:
        """What the alarm API can do, in Aodh's form."""
        return CAPABILITIES

    @router.get("/alarms/{alarm_id}")
    async def get(alarm_id: str, principal: AnyRole) -> dict[str, Any]:
        return answer(visible(alarm_id, principal), principal)

    @router.put("/alarms/{alarm_id}")
    async def replace(
        alarm_id: str, principal: Writer, body: Annotated[Any, Body()]
    ) -> dict[str, Any]:
        """Replace an alarm's definition (Aodh's PUT)."""
        old = visible(alarm_id, principal)
        spec, project = await validate(body, principal)
        if project != old.project_id and not principal.is_admin:
            raise ApiError(403, "an alarm cannot move to another project")
        return answer(await notifier.replace(alarm_id, spec), principal)

    @router.delete("/alarms/{alarm_id}", status_code=204)
    async def delete(alarm_id: str, principal: Writer) -> Response:
        visible(alarm_id, principal)
        await notifier.delete(alarm_id)
        return Response(status_code=204)

    @router.get("/alarms/{alarm_id}/state")
    async def get_state(alarm_id: str, principal: AnyRole) -> str:
        return visible(alarm_id, principal).state

    @router.put("/alarms/{alarm_id}/state")
    async def set_state(alarm_id: str, principal: Writer, body: Annotated[Any, Body()]) -> str:
        """Set the state by hand: the body is a JSON string (Aodh's form)."""
        visible(alarm_id, principal)
        if body not in STATES:
            raise ApiError(400, f"state: must be one of {', '.join(map(json.dumps, STATES))}")
        alarm = await notifier.set_state(alarm_id, body, f"set by {principal.name}")
        return alarm.state

    @router.get("/alarms/{alarm_id}/history")
    async def history(alarm_id: str, principal: AnyRole) -> list[dict[str, Any]]:
        visible(alarm_id, principal)
        return [_change(h, principal) for h in await notifier.history(alarm_id)]

    return router

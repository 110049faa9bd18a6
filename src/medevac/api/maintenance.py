"""Planned maintenance of a host: ``/v1/hosts/{host}/maintenance`` (start, show, end)
and ``/v1/hosts/{host}/maintenance/answers`` (the owners' answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.cloud.errors import CloudError
from medevac.cluster.ownership import NotOwner
from medevac.config import Role
from medevac.recovery.maintenance import Maintenance, NoMaintenance, NotStarted, Refused
from medevac.recovery.maintenance_plan import Answer
from medevac.storage.maintenances import MaintenanceExists, MaintenanceStore, WrongState
from medevac.storage.models import NAME_LENGTH

Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
AdminOrReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.READER))]
AdminOrMember = Annotated[Principal, Depends(require(Role.ADMIN, Role.MEMBER))]


class MaintenanceStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="planned maintenance", min_length=1, max_length=NAME_LENGTH)
    deadline: str | None = Field(
        default=None,
        max_length=64,
        description="until when owners may answer (ISO 8601; no zone: UTC); null: no "
        "answer window, the migrations start at once",
    )


class MaintenanceAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_id: str = Field(min_length=1, max_length=36)
    answer: Literal["ack", "leave"]


MAX_ANSWER_WINDOW = 366 * 86400.0  # s: a deadline further ahead is a mistake


def parse_deadline(text: str | None, now: float) -> float | None:
    """An ISO 8601 time as epoch seconds (no zone: UTC); 400 unless it is a time to
    come within ``MAX_ANSWER_WINDOW``."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"deadline {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:  # in UTC, a time near year 1 or 9999 falls outside what a date can hold
        at = when.astimezone(UTC).timestamp()
    except (OverflowError, ValueError):
        at = float("inf") if when.year > 1 else float("-inf")
    if at <= now:
        raise ApiError(400, f"deadline {text!r} is past: give a time to come, or null")
    if at > now + MAX_ANSWER_WINDOW:
        raise ApiError(
            400, f"deadline {text!r} is more than a year ahead: give a nearer time, or null"
        )
    return at


def maintenance_router(
    maintenance: Maintenance | None, store: MaintenanceStore, hosts: Collection[str]
) -> APIRouter:
    router = APIRouter(tags=["maintenance"])

    def known(host: str) -> None:
        if host not in hosts:
            raise ApiError(404, f"unknown host {host!r}")

    def available() -> Maintenance:
        if maintenance is None:
            raise ApiError(503, "planned maintenance needs recovery enabled ([recovery] enabled)")
        return maintenance

    @router.post(
        "/v1/hosts/{host}/maintenance",
        status_code=202,
        responses={
            409: {"description": "not in service, under maintenance, or not owned"},
            503: {"description": "recovery disabled, or the workflow could not start"},
        },
    )
    async def start(host: str, body: MaintenanceStart, principal: Admin) -> JSONResponse:
        """Put a host under planned maintenance: its compute service disabled with the
        reason, its servers' owners told (``maintenance.scheduled``), their answers
        taken until the deadline, then its HA servers live-migrated away; answers 202
        with the maintenance (SCHEDULED)."""
        known(host)
        deadline = parse_deadline(body.deadline, time.time())
        try:
            record = await available().start(host, body.reason, deadline, principal.name)
        except (Refused, MaintenanceExists, NotOwner) as exc:
            raise ApiError(409, str(exc)) from None
        except NotStarted as exc:
            raise ApiError(503, str(exc)) from None
        return JSONResponse(record, status_code=202)

    @router.get("/v1/hosts/{host}/maintenance")
    async def show(host: str, _: AdminOrReader) -> dict[str, Any]:
        """The host's open maintenance, else its last one: state, reason, deadline, and
        each server's answer and migration."""
        known(host)
        record = await asyncio.to_thread(store.latest, host)
        if record is None:
            raise ApiError(404, f"{host} has never been under maintenance")
        return record

    @router.delete("/v1/hosts/{host}/maintenance")
    async def end(host: str, principal: Admin) -> dict[str, Any]:
        """End the host's maintenance: its compute service enabled, its lifecycle back
        to UP, ``maintenance.complete`` sent. 409 while migrations are under way."""
        known(host)
        try:
            return await available().end(host, principal.name)
        except NoMaintenance as exc:
            raise ApiError(404, str(exc)) from None
        except (Refused, NotOwner) as exc:
            raise ApiError(409, str(exc)) from None
        except CloudError as exc:
            raise ApiError(409, f"Nova refused to enable {host}: {exc.cloud_message}") from None

    @router.post("/v1/hosts/{host}/maintenance/answers")
    async def answer(
        host: str, body: MaintenanceAnswer, principal: AdminOrMember
    ) -> dict[str, Any]:
        """An owner's answer for one of its servers until the migrations start: ``ack``
        (do as planned) or ``leave`` (keep it on the host). A member answers for its
        own project's servers only; the last answer counts."""
        known(host)
        if await asyncio.to_thread(store.current, host) is None:
            raise ApiError(404, f"{host} has no open maintenance")
        project = None if principal.is_admin else (principal.project_id or "")
        try:
            return await available().answer(
                host, body.server_id, Answer(body.answer), principal.name, project
            )
        except NoMaintenance as exc:
            raise ApiError(404, str(exc)) from None
        except WrongState as exc:
            raise ApiError(409, str(exc)) from None

    return router

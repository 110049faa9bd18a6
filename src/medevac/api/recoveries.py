"""Recoveries and the evacuation history: ``/v1/recoveries``, ``/v1/history``, and the
retry of a recovery whose fencing failed."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.api.paging import Paged
from medevac.changes import AUDIT, ChangeFeed
from medevac.cluster.ownership import NotOwner
from medevac.config import Role
from medevac.inspector.inspector import Inspector, RetryRefused
from medevac.storage import Database
from medevac.storage.records import RecoveryStore

AdminOrReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.READER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


def recoveries_router(
    store: RecoveryStore,
    db: Database | None = None,
    inspector: Inspector | None = None,
    changes: ChangeFeed | None = None,
) -> APIRouter:
    router = APIRouter(tags=["recovery"])

    @router.get("/v1/recoveries")
    async def list_recoveries(
        _: AdminOrReader, page: Paged, host: str | None = None
    ) -> dict[str, Any]:
        """Host recoveries, newest first, with their state (FENCING, EVACUATING, ...)."""
        rows = await asyncio.to_thread(
            store.recent, host=host, limit=page.limit, offset=page.offset
        )
        return {"recoveries": rows}

    @router.get("/v1/recoveries/{recovery_id}")
    async def get_recovery(recovery_id: str, _: AdminOrReader) -> dict[str, Any]:
        """One recovery with every server's evacuation."""
        body = await asyncio.to_thread(store.get, recovery_id)
        if body is None:
            raise ApiError(404, f"recovery {recovery_id} not found")
        return body

    @router.post(
        "/v1/recoveries/{recovery_id}/retry",
        responses={409: {"description": "not the host's latest recovery, or not FENCING_FAILED"}},
    )
    async def retry(recovery_id: str, principal: Admin) -> dict[str, Any]:
        """Start a host's recovery again after its fencing failed (an operator saw to
        the BMC): fenced first again, nothing moved unless that is confirmed. Only the
        host's latest recovery, only while the host is in FENCING_FAILED; audited."""
        body = await asyncio.to_thread(store.get, recovery_id)
        if body is None:
            raise ApiError(404, f"recovery {recovery_id} not found")
        if inspector is None or db is None:
            raise ApiError(409, "this controller runs no recoveries")
        if body["state"] != "FENCING_FAILED":
            raise ApiError(409, f"recovery {recovery_id} is {body['state']}, not FENCING_FAILED")
        host = body["host"]
        try:
            result = await inspector.retry_recovery(host, principal.name, recovery_id)
        except (RetryRefused, NotOwner) as exc:
            raise ApiError(409, str(exc)) from None
        await asyncio.to_thread(db.record_audit, "recovery.retried", host, principal.name, result)
        if changes is not None:
            changes.publish(AUDIT, host)
        return result

    @router.get("/v1/history")
    async def history(
        _: AdminOrReader,
        page: Paged,
        server: str | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        """The evacuation history: server, from, to, start, end, result; newest first."""
        rows = await asyncio.to_thread(
            store.history, server_id=server, host=host, limit=page.limit, offset=page.offset
        )
        return {"evacuations": rows}

    return router

"""Recoveries and the evacuation history: ``/v1/recoveries``, ``/v1/history``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from medevac.api.auth import Principal, require
from medevac.api.errors import ApiError
from medevac.api.paging import Paged
from medevac.config import Role
from medevac.storage.records import RecoveryStore

AdminOrReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.READER))]


def recoveries_router(store: RecoveryStore) -> APIRouter:
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

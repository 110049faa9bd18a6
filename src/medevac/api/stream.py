"""The controller's changes as server-sent events: ``GET /v1/stream``.

Each event names what changed (``topic``: hosts, incidents, recoveries, alarms, audit;
``subject``: which one), never the thing itself: the page reads it again through the
API, under the same token and role. Authenticated like every route (``X-Auth-Token`` or
``Authorization: Bearer``; a browser reads it with fetch, since EventSource cannot send
a header). A member's stream carries only its own project's alarms; admins and readers
get everything. A comment line keeps idle connections open through proxies; a
subscriber that falls behind gets ``event: dropped`` and its stream ends (the page
reconnects and reads everything again).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from medevac.api.auth import Principal, require
from medevac.changes import ALARMS, Change, ChangeFeed, Filter
from medevac.config import Role

AnyRole = Annotated[Principal, Depends(require())]
# How often an idle stream checks that its client is still there (s).
DISCONNECT_CHECK = 1.0


def visible_to(principal: Principal) -> Filter:
    """The changes ``principal`` may hear of: a member, its project's alarms only."""
    if principal.role in (Role.ADMIN, Role.READER):
        return lambda change: True
    project = principal.project_id
    return lambda change: change.topic == ALARMS and change.project_id == project


def sse(event: str, data: Mapping[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def stream_router(changes: ChangeFeed, keepalive: float = 15.0) -> APIRouter:
    router = APIRouter(tags=["stream"])

    @router.get(
        "/v1/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(request: Request, principal: AnyRole) -> StreamingResponse:
        """Server-sent events, one per change the caller may see: ``event: change``
        with ``{"topic", "subject", "project_id", "at"}``; first ``event: hello`` (who
        the caller is), a ``: keepalive`` comment when idle, ``event: dropped`` before
        the end when the caller fell behind."""
        sub = changes.subscribe(visible_to(principal))
        hello = {"name": principal.name, "role": principal.role.value}

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse("hello", hello)
                idle = 0.0
                while not sub.closed or not sub.queue.empty():
                    change: Change | None = await sub.next(DISCONNECT_CHECK)
                    if change is not None:
                        idle = 0.0
                        yield sse("change", change.as_dict())
                        continue
                    if await request.is_disconnected():
                        return
                    idle += DISCONNECT_CHECK
                    if idle >= keepalive:
                        idle = 0.0
                        yield b": keepalive\n\n"
                if sub.dropped:
                    yield sse("dropped", {"reason": "this stream fell behind"})
            finally:
                sub.close()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router

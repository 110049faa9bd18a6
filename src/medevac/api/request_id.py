"""A request id on every answer (``X-Request-Id``), and the last word on failures: an
unhandled exception is logged as its type, where it was raised and the request id,
never its message, and goes no further, so the server does not log its traceback."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medevac.api.errors import internal_error_body, log_unhandled, send_json

HEADER = b"x-request-id"


class RequestIds:
    """ASGI middleware, outside all others: gives each HTTP request an id, sends it back
    in ``X-Request-Id``, and answers 500 itself when nothing inside has answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # Starlette re-raises after its handler answered
            log_unhandled(scope, exc)
            if started:
                return
            await send_json(send_with_id, 500, internal_error_body(scope))

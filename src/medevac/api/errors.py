"""One JSON error envelope for every failure: ``{"error": {"code", "title", "message"}}``,
except on Aodh's routes (``/v2/...``), which answer as Aodh does:
``{"error_message": {"faultcode", "faultstring", "debuginfo"}}``, what Aodh's clients read,
and on Masakari's (``/instance-ha/...``), which answer with Masakari's fault body
``{"badRequest": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import logging
import traceback
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raise from a route to answer with the envelope."""

    def __init__(self, status: int, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


AODH_PREFIX = "/v2/"


def aodh_error_body(status: int, message: str) -> dict[str, Any]:
    """Aodh's error body (WSME's fault in Aodh's ParsableErrorMiddleware)."""
    fault = {
        "faultcode": "Server" if status >= 500 else "Client",
        "faultstring": message,
        "debuginfo": None,
    }
    return {"error_message": fault}


def is_aodh_path(path: str) -> bool:
    return path.startswith(AODH_PREFIX)


MASAKARI_PREFIX = "/instance-ha"
# The fault's name by status, as Masakari's wsgi Fault names them (others: masakariFault).
MASAKARI_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def masakari_error_body(status: int, message: str) -> dict[str, Any]:
    """Masakari's fault body: one member named for the status."""
    return {MASAKARI_FAULTS.get(status, "masakariFault"): {"code": status, "message": message}}


def is_masakari_path(path: str) -> bool:
    return path == MASAKARI_PREFIX or path.startswith(MASAKARI_PREFIX + "/")


def error_body_for(path: str, status: int, message: str) -> dict[str, Any]:
    """The error body the API under ``path`` answers with (for middleware, which
    answers before any application's own handlers)."""
    if is_masakari_path(path):
        return masakari_error_body(status, message)
    return error_body(status, message, aodh=is_aodh_path(path))


def error_body(status: int, message: str, *, aodh: bool = False, **detail: Any) -> dict[str, Any]:
    """The envelope, or Aodh's error body when ``aodh`` (whose shape has no detail)."""
    if aodh:
        return aodh_error_body(status, message)
    error: dict[str, Any] = {
        "code": status,
        "title": HTTPStatus(status).phrase,
        "message": message,
    }
    if detail:
        error["detail"] = detail
    return {"error": error}


def error_response(
    status: int,
    message: str,
    *,
    aodh: bool = False,
    headers: dict[str, str] | None = None,
    **detail: Any,
) -> JSONResponse:
    """:func:`error_body` as a response; 401 says how to authenticate."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    body = error_body(status, message, aodh=aodh, **detail)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """Answer ``body`` as JSON straight on the ASGI channel (for middleware that answers
    before, or instead of, the application)."""
    content = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


def request_id(scope: Scope) -> str:
    """The id the request was given (see ``medevac.api.request_id``); ``-`` if none."""
    return str(scope.get("state", {}).get("request_id", "-"))


def raised_at(exc: BaseException) -> str:
    """Where ``exc`` was raised, ``file:line in function``: code, not data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def log_unhandled(scope: Scope, exc: BaseException) -> None:
    """Log an unhandled exception once, by type, place and request id, never its
    message: exception text may carry secrets (a URL's password, a token)."""
    state = scope.setdefault("state", {})
    if state.get("error_logged"):
        return
    state["error_logged"] = True
    log.error(
        "unhandled %s on %s %s (request %s), raised at %s",
        type(exc).__name__,
        scope.get("method", "?"),
        scope.get("path", "?"),
        request_id(scope),
        raised_at(exc),
    )


def internal_error_body(scope: Scope) -> dict[str, Any]:
    """What a 500 answers: no exception text, the request id to find the log line."""
    rid = request_id(scope)
    message = f"internal error; see the controller log for request {rid}"
    path = scope.get("path", "")
    if is_masakari_path(path):
        return masakari_error_body(500, message)
    return error_body(500, message, aodh=is_aodh_path(path), request_id=rid)


def _respond(request: Request, status: int, message: str, **detail: Any) -> JSONResponse:
    return error_response(status, message, aodh=is_aodh_path(request.url.path), **detail)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "(body)"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _respond(request, exc.status, exc.message, **exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _respond(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"field": "(body)", "problem": "invalid"}
        return _respond(request, 400, f"{first['field']}: {first['problem']}", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The message stays generic: exception text may carry data we must not echo.
        log_unhandled(request.scope, exc)
        return JSONResponse(internal_error_body(request.scope), status_code=500)

"""One JSON error envelope for every failure: ``{"error": {"code", "title", "message"}}``,
except on Aodh's routes (``/v2/...``), which answer as Aodh does:
``{"error_message": {"faultcode", "faultstring", "debuginfo"}}``, what Aodh's clients read.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def error_response(status: int, message: str, *, aodh: bool = False, **detail: Any) -> JSONResponse:
    """The envelope, or Aodh's error body when ``aodh`` (whose shape has no detail)."""
    body: dict[str, Any]
    if aodh:
        body = aodh_error_body(status, message)
    else:
        error: dict[str, Any] = {
            "code": status,
            "title": HTTPStatus(status).phrase,
            "message": message,
        }
        if detail:
            error["detail"] = detail
        body = {"error": error}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


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
        log.error(
            "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        log.debug("unhandled error detail", exc_info=exc)
        return _respond(request, 500, "internal error; see the controller log")

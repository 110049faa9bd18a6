"""The Masakari-compatible application, mounted at ``/instance-ha`` by the main API.

Its own application so that every answer, errors included, is Masakari's: fault
bodies ``{"badRequest": {"code": 400, "message": ...}}``, the microversion echoed in
``OpenStack-API-Version`` with ``Vary``. Tokens are the main API's (static or
Keystone); every resource needs the admin role to change and admin or reader to read
(Masakari's policy is admin-only; a member sees nothing). Each resource answers at
``/v1/...`` and at ``/v1/{project_id}/...``, as Masakari's routes do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medevac.api.auth import Principal, TokenRegistry, require
from medevac.api.errors import ApiError, log_unhandled, request_id
from medevac.api.masakari import versions
from medevac.api.masakari.common import ComputeHosts, Context, Fault, fault_response
from medevac.api.masakari.notifications import notifications_router
from medevac.api.masakari.openapi import refine
from medevac.api.masakari.segments import segments_router
from medevac.api.openapi import install_openapi
from medevac.monitor.raw import FaultSink
from medevac.storage.db import Database

VERSION_UPDATED = "2016-07-01T11:33:21Z"
AnyRole = Depends(require())


def masakari_app(
    db: Database,
    tokens: TokenRegistry,
    sink: FaultSink | None = None,
    compute_hosts: ComputeHosts | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Masakari's API v1 over ``db``: notifications go to ``sink`` (the monitor) as raw
    faults; a segment host must be one of ``compute_hosts`` (Nova's), when given."""
    app = FastAPI(
        title="medevac: Masakari API v1",
        version=versions.text(versions.MAX_VERSION),
        description="Masakari's instance-ha API v1 over medevac's segments and monitor.",
        # Served below behind a token, as the main API's document is.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_openapi(app, refine)
    app.state.tokens = tokens
    ctx = Context(db, sink, compute_hosts, clock)

    @app.middleware("http")
    async def microversion(request: Request, call_next: Any) -> Response:
        try:
            version = versions.requested(request.headers.getlist(versions.HEADER))
        except versions.VersionError as exc:
            return fault_response(exc.status, exc.message)
        request.state.masakari_version = version
        response: Response = await call_next(request)
        response.headers.update(versions.answer_headers(version))
        return response

    @app.exception_handler(Fault)
    async def _fault(_: Request, exc: Fault) -> Response:
        return fault_response(exc.status, exc.message)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return fault_response(exc.status, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return fault_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        return fault_response(400, f"Invalid input for {where}: {first['msg']}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log_unhandled(request.scope, exc)
        rid = request_id(request.scope)
        return fault_response(500, f"internal error; see the controller log for request {rid}")

    # -- versions -------------------------------------------------------------------

    def _root(request: Request) -> str:
        # Where this application is mounted (``/instance-ha``), with the scheme and host
        # the request came to: the clients follow these links.
        mounted = str(request.scope.get("root_path", "")).rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{mounted}"

    @app.get("/")
    async def versions_list(request: Request) -> dict[str, Any]:
        """The API versions (no token needed, as in Masakari)."""
        return {
            "versions": [
                {
                    "id": "v1.0",
                    "status": "CURRENT",
                    "version": versions.text(versions.MAX_VERSION),
                    "min_version": versions.text(versions.MIN_VERSION),
                    "updated": VERSION_UPDATED,
                    "links": [{"rel": "self", "href": f"{_root(request)}/v1/"}],
                }
            ]
        }

    async def version_v1(request: Request) -> dict[str, Any]:
        """Version 1 with its microversions."""
        return {
            "version": {
                "id": "v1.0",
                "status": "CURRENT",
                "version": versions.text(versions.MAX_VERSION),
                "min_version": versions.text(versions.MIN_VERSION),
                "updated": VERSION_UPDATED,
                "links": [
                    {"rel": "self", "href": f"{_root(request)}/v1/"},
                    {
                        "rel": "describedby",
                        "type": "text/html",
                        "href": "https://docs.openstack.org/",
                    },
                ],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.masakari+json;version=1",
                    }
                ],
            }
        }

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(_: Principal = AnyRole) -> JSONResponse:
        """This API's OpenAPI document (any token)."""
        return JSONResponse(app.openapi())

    app.add_api_route("/v1", version_v1, methods=["GET"])
    app.add_api_route("/v1/", version_v1, methods=["GET"])

    for router in (segments_router(ctx), notifications_router(ctx)):
        app.include_router(router, prefix="/v1")
        # The same routes under a project id: documented once, without it.
        app.include_router(
            router, prefix="/v1/{project_id:masakari_project}", include_in_schema=False
        )
    return app

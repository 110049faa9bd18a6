"""The FastAPI application: routes grouped by block, every non-health route authenticated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp

from medevac import __version__
from medevac.api.alarms import alarms_router
from medevac.api.auth import KeystoneValidator, Principal, TokenRegistry, require
from medevac.api.dashboard import dashboard_app
from medevac.api.errors import ApiError, install_error_handlers
from medevac.api.external import external_router
from medevac.api.health import Health
from medevac.api.incidents import incidents_router
from medevac.api.limits import BodySizeLimit, NulRefusal, TokenRateLimit
from medevac.api.maintenance import maintenance_router
from medevac.api.masakari import masakari_app
from medevac.api.openapi import install_openapi
from medevac.api.paging import Page, Paged
from medevac.api.recoveries import recoveries_router
from medevac.api.request_id import RequestIds
from medevac.api.stream import stream_router
from medevac.changes import AUDIT, ChangeFeed
from medevac.cloud.errors import CloudError
from medevac.cluster.ownership import NotOwner
from medevac.cluster.ring import owner_of
from medevac.config import Role, Settings
from medevac.inspector.inspector import Inspector
from medevac.monitor.hosts import KEPT_VERDICTS, HostMonitor
from medevac.notifier.notifier import Notifier
from medevac.recovery.maintenance import Maintenance
from medevac.service.metrics import BlocksCollector, ControllerMetrics
from medevac.storage import Database
from medevac.storage.maintenances import MaintenanceStore
from medevac.storage.records import IncidentStore, RecoveryStore

AnyRole = Annotated[Principal, Depends(require())]
AdminOrReader = Annotated[Principal, Depends(require(Role.ADMIN, Role.READER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


class MedevacApi(FastAPI):
    """FastAPI with request ids outside Starlette's error middleware, which re-raises
    every unhandled exception for the server to log with its message."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIds(super().build_middleware_stack())


def create_app(
    settings: Settings,
    db: Database,
    monitor: HostMonitor | None = None,
    inspector: Inspector | None = None,
    notifier: Notifier | None = None,
    cluster: Callable[[], dict[str, Any]] | None = None,
    metrics: ControllerMetrics | None = None,
    changes: ChangeFeed | None = None,
    maintenance: Maintenance | None = None,
) -> FastAPI:
    """Build the API for one controller; the caller owns the blocks passed in.
    ``metrics``: the controller's (else a registry over the blocks passed);
    ``changes``: what ``/v1/stream`` follows."""
    app = MedevacApi(
        title="medevac",
        version=__version__,
        description="Fault management and VM high availability for OpenStack clouds.",
        # Served below behind a token, like every route but /healthz and /readyz.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_openapi(app)
    keystone = KeystoneValidator(settings.keystone) if settings.keystone.enabled else None
    app.state.tokens = TokenRegistry(settings.api.tokens, keystone)
    app.state.db = db
    app.state.changes = changes
    maintenances = MaintenanceStore(db)
    install_error_handlers(app)
    # Innermost first: NUL characters are looked for in a body already bounded in size.
    app.add_middleware(NulRefusal)
    app.add_middleware(BodySizeLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(
        TokenRateLimit,
        rate=settings.api.rate_limit,
        burst=settings.api.rate_burst,
        known=app.state.tokens.knows,
    )

    health = app.state.health = Health(db, notifier=notifier, monitor=monitor)
    with contextlib.suppress(RuntimeError):  # built outside a loop: started on first use
        health.loop.start()
    if metrics is None:
        metrics = ControllerMetrics()
        metrics.watch(
            BlocksCollector(
                monitor=monitor, inspector=inspector, notifier=notifier, cluster=cluster
            )
        )
    assert metrics.blocks is not None
    metrics.blocks.loop_lag = health.loop.worst
    app.state.metrics = metrics

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "the metrics"}},
    )
    async def prometheus_metrics(request: Request, _: AdminOrReader) -> Response:
        """This controller's metrics in Prometheus' text format (OpenMetrics when the
        Accept header asks for it); admin and reader tokens (docs/metrics.md)."""
        health.loop.start()
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.get(
        "/healthz",
        tags=["health"],
        responses={503: {"description": "unhealthy: the reasons are in the body"}},
    )
    async def healthz() -> JSONResponse:
        """Liveness (no auth): the store answers a query in time, the event loop has not
        stalled lately, the outbox's writes succeed; 503 with the reasons if not."""
        body = {**await health.health(), "version": __version__}
        return JSONResponse(body, status_code=503 if body["reasons"] else 200)

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"description": "not ready: what it waits for is in the body"}},
    )
    async def readyz() -> JSONResponse:
        """Readiness (no auth): the schema is migrated, the alarms are loaded, the outbox
        is started and the monitor runs; 503 with what it waits for if not."""
        body = await health.readiness()
        return JSONResponse(body, status_code=503 if body["waiting"] else 200)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(_: AnyRole) -> JSONResponse:
        """This API's OpenAPI document."""
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_: AnyRole) -> HTMLResponse:
        """Swagger UI over the document (the browser must send the token, too)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/v1/whoami", tags=["auth"])
    async def whoami(principal: AnyRole) -> dict[str, Any]:
        """Who the presented token stands for."""
        return {
            "name": principal.name,
            "role": principal.role.value,
            "project_id": principal.project_id,
        }

    @app.get("/v1/audit", tags=["audit"])
    async def audit(
        request: Request,
        _: AdminOrReader,
        page: Paged,
        subject: str | None = None,
    ) -> dict[str, Any]:
        """The audit log, newest first; spans every project, so admin and reader only."""
        database: Database = request.app.state.db
        events = database.audit_events(subject=subject, limit=page.limit, offset=page.offset)
        return {
            "events": [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "subject": e.subject,
                    "actor": e.actor,
                    "trace_id": e.trace_id,
                    "detail": e.detail,
                }
                for e in events
            ]
        }

    if monitor is not None:
        app.include_router(
            external_router(
                monitor,
                host_label=settings.monitor.alertmanager_host_label,
                tokenless=settings.monitor.tokenless_fault_networks,
                doctor_zone=settings.monitor.doctor_zone,
            )
        )

    @app.get("/v1/cluster", tags=["monitor"])
    async def cluster_view(_: AdminOrReader) -> dict[str, Any]:
        """The controllers: this one's id, the live members, the hosts it owns with
        their epochs, its lease, claims made and effects refused. One controller alone
        owns every host and says so."""
        if cluster is None:
            return {"member_id": "local", "members": ["local"], "sole": True}
        return {**cluster(), "sole": False}

    @app.get("/v1/cluster/silence", tags=["monitor"])
    async def cluster_silence(
        _: AdminOrReader, host: Annotated[str, Query(min_length=1, max_length=255)]
    ) -> dict[str, Any]:
        """How long this controller has not heard ``host`` (null: never heard): what
        another controller asks before it declares the host lost."""
        if monitor is None or host not in monitor.hosts:
            raise ApiError(404, f"unknown host {host!r}")
        return {"host": host, "silence_s": monitor.silence_of(host)}

    @app.get("/v1/hosts", tags=["monitor"])
    async def hosts(_: AdminOrReader) -> dict[str, Any]:
        """Every watched host: detector state, its lifecycle (what was decided and done),
        BMC power as last seen, Nova's view, verdict, its open maintenance (null: none);
        with several controllers, its ``owner`` (this one's id when it holds the host,
        else the member the live members' hash gives it to)."""
        if monitor is None:
            return {"hosts": [], "counters": None}
        hosts = monitor.snapshot()
        if inspector is not None:
            lives = inspector.host_states.view()
            for h in hosts:
                h["lifecycle"] = lives.get(h["name"], {"state": "UP", "since": None})
        if cluster is not None:
            view = cluster()
            held, members = view.get("hosts", {}), view.get("members", [])
            for h in hosts:
                name = h["name"]
                h["owner"] = view["member_id"] if name in held else owner_of(name, members)
        maintained = await asyncio.to_thread(maintenances.open_all)
        for h in hosts:
            h["maintenance"] = maintained.get(h["name"])
        return {"hosts": hosts, "counters": monitor.counters()}

    @app.post("/v1/hosts/{host}/release", tags=["recovery"])
    async def release(host: str, principal: Admin) -> dict[str, Any]:
        """Put a host that came back into service: unset force-down, enable it, restore
        its ports, send compute.host.up. Refused while the host is not heard from, or
        while Nova still holds evacuations its nova-compute has not cleaned up."""
        if monitor is None or inspector is None or host not in monitor.hosts:
            raise ApiError(404, f"unknown host {host!r}")
        state = monitor.hosts[host].state.value
        if state != "UP":
            raise ApiError(409, f"{host} is not back (the monitor sees it {state})")
        try:
            result = await inspector.release(host, principal.name)
        except CloudError as exc:
            raise ApiError(409, f"Nova refused to release {host}: {exc.cloud_message}") from None
        except NotOwner as exc:
            raise ApiError(409, str(exc)) from None
        await asyncio.to_thread(db.record_audit, "host.released", host, principal.name, result)
        if changes is not None:
            changes.publish(AUDIT, host)
        return result

    @app.get("/v1/verdicts", tags=["monitor"])
    async def verdicts(
        _: AdminOrReader,
        limit: Annotated[int, Query(ge=1, le=KEPT_VERDICTS)] = KEPT_VERDICTS,
        offset: Annotated[int, Query(ge=0, le=KEPT_VERDICTS)] = 0,
    ) -> dict[str, Any]:
        """The most recent verdicts (``offset`` skips the newest), listed oldest first."""
        recent = list(monitor.recent_verdicts) if monitor is not None else []
        chosen = Page(limit, offset).of(recent[::-1])[::-1]
        return {"verdicts": [v.as_dict() for v in chosen]}

    app.include_router(recoveries_router(RecoveryStore(db), db, inspector, changes))
    if changes is not None:
        app.include_router(stream_router(changes))
    nova_hosts = monitor.nova.compute_services if monitor is not None else None
    app.mount("/instance-ha", masakari_app(db, app.state.tokens, monitor, nova_hosts))
    app.include_router(
        maintenance_router(maintenance, maintenances, monitor.hosts if monitor is not None else ())
    )
    if notifier is not None:
        targets = settings.notifier.action_targets()
        app.include_router(
            alarms_router(
                notifier,
                [(settings.api.host, settings.api.port)],
                targets=targets,
                resolve_timeout=settings.notifier.action_resolve_timeout,
                quota=settings.api.alarm_quota,
            )
        )
        if inspector is not None:
            app.include_router(
                incidents_router(IncidentStore(db), RecoveryStore(db), inspector, notifier)
            )

    # The operators' pages: static, tokenless files; every datum they show comes from
    # the routes above, under the token the page asks for.
    app.mount("/ui", dashboard_app(), name="ui")
    return app

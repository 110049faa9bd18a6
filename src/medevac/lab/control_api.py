"""The lab supervisor's control API: fault injection, status, and client shims.

Loopback only and without auth: it is a development tool, like the lab itself. It
also serves the few Keystone and Glance documents that `openstack` commands insist
on reading even with ``auth_type: none``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from medevac.lab.faults import FaultError, FaultKind
from medevac.lab.layout import PROJECTS, LabError
from medevac.lab.status import running as running_view
from medevac.lab.status import status as status_view

if TYPE_CHECKING:
    from medevac.lab.supervisor import Lab


class FaultRequest(BaseModel):
    kind: FaultKind
    target: str = Field(min_length=1)
    physnet: str | None = None


def control_app(lab: Lab, shutdown: asyncio.Event) -> FastAPI:
    """The lab's control API (loopback only, no auth: it is a development tool)."""
    api = FastAPI(title="medevac lab control")

    @api.exception_handler(FaultError)
    async def _fault_error(_: Request, exc: FaultError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @api.exception_handler(LabError)
    async def _lab_error(_: Request, exc: LabError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=502)

    @api.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @api.get("/status")
    async def status() -> dict[str, Any]:
        return await asyncio.to_thread(status_view, lab)

    @api.get("/running")
    async def running() -> dict[str, list[str]]:
        return await asyncio.to_thread(running_view, lab)

    @api.get("/faults")
    async def faults() -> dict[str, Any]:
        lines = (
            lab.paths.faults_log.read_text().splitlines() if lab.paths.faults_log.exists() else []
        )
        return {"faults": [json.loads(line) for line in lines]}

    @api.post("/inject")
    async def inject(req: FaultRequest) -> dict[str, Any]:
        return await asyncio.to_thread(
            lab.faults.apply_fault, req.kind, req.target, True, req.physnet
        )

    @api.post("/heal")
    async def heal(req: FaultRequest) -> dict[str, Any]:
        return await asyncio.to_thread(
            lab.faults.apply_fault, req.kind, req.target, False, req.physnet
        )

    # A minimal Keystone v3 stand-in: discovery and the lab's projects, so that
    # `openstack` commands that insist on an identity client work with auth "none".
    def _project(pid: str) -> dict[str, Any]:
        return {"id": pid, "name": pid, "domain_id": "default", "enabled": True}

    @api.get("/identity")
    @api.get("/identity/v3")
    async def identity_version(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/") + "/identity/v3/"
        version = {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": base}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }
        if request.url.path.rstrip("/").endswith("/v3"):
            return {"version": version}
        return {"versions": {"values": [version]}}

    @api.get("/identity/v3/projects")
    async def projects(name: str | None = None) -> dict[str, Any]:
        known = ["admin", *PROJECTS]
        return {"projects": [_project(p) for p in known if name in (None, p)]}

    @api.get("/identity/v3/projects/{project_id}")
    async def project(project_id: str) -> Any:
        if project_id not in ("admin", *PROJECTS):
            return JSONResponse({"error": {"code": 404, "message": "not found"}}, 404)
        return {"project": _project(project_id)}

    # Likewise a read-only Glance v2 with the one image Nova's fake image service has.
    @api.get("/image")
    async def image_versions(request: Request) -> dict[str, Any]:
        href = str(request.base_url).rstrip("/") + "/image/v2/"
        return {
            "versions": [
                {"id": "v2.16", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}
            ]
        }

    def _image() -> dict[str, Any]:
        return {
            "id": lab.services.nova["image_id"],
            "name": "lab-image",
            "status": "active",
            "visibility": "public",
            "disk_format": "raw",
            "container_format": "bare",
        }

    @api.get("/image/v2/images")
    async def images() -> dict[str, Any]:
        return {"images": [_image()]}

    @api.get("/image/v2/images/{image_id}")
    async def image(image_id: str) -> Any:
        if image_id != lab.services.nova["image_id"]:
            return JSONResponse({"error": {"code": 404, "message": "not found"}}, 404)
        return _image()

    @api.post("/shutdown")
    async def stop() -> dict[str, Any]:
        shutdown.set()
        return {"ok": True}

    return api

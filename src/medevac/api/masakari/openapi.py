"""The Masakari API's OpenAPI document: its request bodies in their wrappers, its
answers' shapes, its query filters, the microversion header, and every status a route
gives, errors in Masakari's fault body.

The routes read their bodies and queries by hand (to answer as Masakari does), so
FastAPI sees neither: this module says them. Only the ``/v1/...`` routes are listed;
``/v1/{project_id}/...`` answer the same.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from medevac.api.errors import MASAKARI_PREFIX
from medevac.api.masakari import schemas, versions
from medevac.api.openapi import SECURITY_SCHEMES

Time = str | None  # Masakari's "2017-04-21T08:59:53.000000", UTC


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Segment(_Answer):
    id: int
    uuid: str
    name: str
    description: str | None
    recovery_method: str
    service_type: str
    enabled: bool
    created_at: Time
    updated_at: Time
    deleted_at: None
    deleted: bool


class Host(_Answer):
    id: int
    uuid: str
    name: str
    failover_segment_id: str
    failover_segment: Segment
    type: str
    reserved: bool
    control_attributes: str
    on_maintenance: bool
    created_at: Time
    updated_at: Time
    deleted_at: None
    deleted: bool


class ProgressDetail(_Answer):
    timestamp: Time
    message: str
    progress: str


class WorkflowTask(_Answer):
    name: str
    state: str
    progress: float
    progress_details: list[ProgressDetail]


class Notification(_Answer):
    id: int
    notification_uuid: str
    generated_time: Time
    source_host_uuid: str | None
    type: str
    payload: dict[str, Any]
    status: str
    failover_segment_uuid: str | None
    message: str | None
    created_at: Time
    updated_at: Time
    deleted_at: None
    deleted: bool
    recovery_workflow_details: list[WorkflowTask] | None = None  # from 1.1, when shown


class VMove(_Answer):
    id: int
    uuid: str
    notification_uuid: str
    instance_uuid: str
    instance_name: str | None
    source_host: str | None
    dest_host: str | None
    start_time: Time
    end_time: Time
    type: str
    status: str
    message: str | None
    created_at: Time
    updated_at: Time
    deleted_at: None
    deleted: bool


class Link(BaseModel):
    rel: str
    href: str
    type: str | None = None


class Version(BaseModel):
    id: str
    status: str
    version: str
    min_version: str
    updated: str
    links: list[Link]


class SegmentAnswer(_Answer):
    segment: Segment


class Segments(_Answer):
    segments: list[Segment]


class HostAnswer(_Answer):
    host: Host


class Hosts(_Answer):
    hosts: list[Host]


class NotificationAnswer(_Answer):
    notification: Notification


class Notifications(_Answer):
    notifications: list[Notification]


class VMoveAnswer(_Answer):
    vmove: VMove


class VMoves(_Answer):
    vmoves: list[VMove]


class Versions(BaseModel):
    versions: list[Version]


class VersionAnswer(BaseModel):
    version: Version


FAULT = {
    "description": "Masakari's fault: one member named for the status",
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    },
}
ERRORS = {
    "400": "invalid request, or a malformed microversion",
    "401": "no token, or an unknown one",
    "403": "the token's role may not do this (admin changes; admin or reader reads)",
    "404": "no such resource",
    "405": "an id holding a '/' that makes the path another route's, which has no such method",
    "406": "a microversion this API does not serve",
    "409": "a name taken, a segment in use by a recovery, a host on maintenance, or a "
    "duplicate notification",
    "413": "body larger than api.max_body_bytes",
    "429": "too many requests from this token: see Retry-After",
    "503": "Nova could not be asked for its compute hosts",
}
PAGING = {
    "limit": {"type": "integer"},
    "marker": {"type": "integer"},
    "sort_key": {"type": "string"},
    "sort_dir": {"type": "string", "enum": ["asc", "desc"]},
}
BOOLEAN = {"type": "string", "description": "a boolean: true/false, 'True', 'yes', ..."}
FILTERS: dict[str, dict[str, Any]] = {
    "/v1/segments": {
        "recovery_method": {"type": "string"},
        "service_type": {"type": "string"},
        "enabled": BOOLEAN,
    },
    "/v1/segments/{segment_id}/hosts": {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "control_attributes": {"type": "string"},
        "on_maintenance": BOOLEAN,
        "reserved": BOOLEAN,
    },
    "/v1/notifications": {
        "generated-since": {"type": "string", "description": "an ISO 8601 time"},
        "source_host_uuid": {"type": "string"},
        "type": {"type": "string"},
        "status": {"type": "string"},
    },
    "/v1/notifications/{notification_id}/vmoves": {
        "status": {"type": "string"},
        "type": {"type": "string"},
    },
}
BODIES: dict[tuple[str, str], tuple[str, type[BaseModel]]] = {
    ("post", "/v1/segments"): ("segment", schemas.SegmentCreate),
    ("put", "/v1/segments/{segment_id}"): ("segment", schemas.SegmentUpdate),
    ("post", "/v1/segments/{segment_id}/hosts"): ("host", schemas.HostCreate),
    ("put", "/v1/segments/{segment_id}/hosts/{host_id}"): ("host", schemas.HostUpdate),
    ("post", "/v1/notifications"): ("notification", schemas.NotificationCreate),
}
ANSWERS: dict[tuple[str, str], type[BaseModel]] = {
    ("get", "/"): Versions,
    ("get", "/v1"): VersionAnswer,
    ("get", "/v1/"): VersionAnswer,
    ("get", "/v1/segments"): Segments,
    ("post", "/v1/segments"): SegmentAnswer,
    ("get", "/v1/segments/{segment_id}"): SegmentAnswer,
    ("put", "/v1/segments/{segment_id}"): SegmentAnswer,
    ("get", "/v1/segments/{segment_id}/hosts"): Hosts,
    ("post", "/v1/segments/{segment_id}/hosts"): HostAnswer,
    ("get", "/v1/segments/{segment_id}/hosts/{host_id}"): HostAnswer,
    ("put", "/v1/segments/{segment_id}/hosts/{host_id}"): HostAnswer,
    ("get", "/v1/notifications"): Notifications,
    ("post", "/v1/notifications"): NotificationAnswer,
    ("get", "/v1/notifications/{notification_id}"): NotificationAnswer,
    ("get", "/v1/notifications/{notification_id}/vmoves"): VMoves,
    ("get", "/v1/notifications/{notification_id}/vmoves/{vmove_id}"): VMoveAnswer,
}
# Answers particular to some operations, beyond those every one may give.
CONFLICT = {
    ("post", "/v1/segments"),
    ("put", "/v1/segments/{segment_id}"),
    ("delete", "/v1/segments/{segment_id}"),
    ("post", "/v1/segments/{segment_id}/hosts"),
    ("put", "/v1/segments/{segment_id}/hosts/{host_id}"),
    ("delete", "/v1/segments/{segment_id}/hosts/{host_id}"),
    ("post", "/v1/notifications"),
}
ASKS_NOVA = {
    ("post", "/v1/segments/{segment_id}/hosts"),
    ("put", "/v1/segments/{segment_id}/hosts/{host_id}"),
}
UNAUTHENTICATED = {"/", "/v1", "/v1/"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _component_schemas() -> dict[str, Any]:
    found: dict[str, Any] = {"Fault": FAULT}
    models = [(m, "validation") for _, m in BODIES.values()]
    models += [(m, "serialization") for m in ANSWERS.values()]
    for model, mode in models:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode=mode,  # type: ignore[arg-type]
        )
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _parameters(method: str, path: str) -> list[dict[str, Any]]:
    header = {
        "name": versions.HEADER,
        "in": "header",
        "required": False,
        "description": f"'{versions.SERVICE} 1.0' to '{versions.SERVICE} 1.3', or 'latest'",
        "schema": {"type": "string"},
    }
    out = [header]
    if method == "get" and path in FILTERS:
        for name, schema in {**FILTERS[path], **PAGING}.items():
            out.append({"name": name, "in": "query", "required": False, "schema": schema})
    return out


def refine(doc: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's document of the Masakari app in place (and return it)."""
    doc["servers"] = [{"url": MASAKARI_PREFIX}]
    components = doc.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    components["schemas"] = _component_schemas()
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            key = (method, path)
            in_path = [p for p in op.get("parameters", []) if p["in"] == "path"]
            op["parameters"] = in_path + _parameters(method, path)
            responses: dict[str, Any] = op.setdefault("responses", {})
            responses.pop("422", None)
            codes = ["400", "406", "429"]
            if path not in UNAUTHENTICATED:
                op["security"] = [{"AuthToken": []}, {"Bearer": []}]
                codes += ["401", "403"]
            if "{" in path:
                codes += ["404", "405"]
            if key in CONFLICT:
                codes.append("409")
            if key in BODIES:
                wrapper, model = BODIES[key]
                body = {
                    "type": "object",
                    "required": [wrapper],
                    "additionalProperties": False,
                    "properties": {wrapper: _ref(model.__name__)},
                }
                op["requestBody"] = {"required": True, "content": _json(body)}
                codes.append("413")
            if key in ASKS_NOVA:
                codes.append("503")
            for code in codes:
                responses[code] = {"description": ERRORS[code], "content": _json(_ref("Fault"))}
            if key in ANSWERS:
                ok = next(c for c in responses if c.startswith("2"))
                responses[ok]["content"] = _json(_ref(ANSWERS[key].__name__))
    doc.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    return doc

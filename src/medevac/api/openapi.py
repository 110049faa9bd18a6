"""The OpenAPI document as the API answers: 400 (not FastAPI's 422) for invalid input,
401, 403, 404, 409, 413 and 429 where they happen, in the error shape of each prefix
(Aodh's on ``/v2``), the two ways to present a token, and typed alarm bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from medevac.api.errors import is_aodh_path
from medevac.notifier.alarms import STATES, AlarmSpec

SECURITY_SCHEMES = {
    "AuthToken": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": "a token from [[api.tokens]] (the OpenStack convention)",
    },
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the same token"},
}
UNAUTHENTICATED = {"/healthz", "/readyz"}
# Answers particular to one operation, beyond those every route may give.
CONFLICTS = {
    ("post", "/v1/hosts/{host}/release"): "the host is not back, or Nova refuses",
    ("get", "/v1/incidents/{incident_id}/profile"): "the incident has no profile yet",
}
UNKNOWN_HOST = {("put", "/events"), ("post", "/v1/alertmanager"), ("get", "/v1/cluster/silence")}
ALARM_BODIES = {("post", "/v2/alarms"), ("put", "/v2/alarms/{alarm_id}")}
ALARM_ANSWERS = {
    ("post", "/v2/alarms"): "201",
    ("put", "/v2/alarms/{alarm_id}"): "200",
    ("get", "/v2/alarms/{alarm_id}"): "200",
}


class ErrorDetail(BaseModel):
    code: int
    title: str
    message: str
    detail: dict[str, Any] | None = None


class Error(BaseModel):
    """medevac's error envelope (``/v1`` and the monitors' routes)."""

    error: ErrorDetail


class AodhFault(BaseModel):
    faultcode: str = Field(description="Client or Server")
    faultstring: str
    debuginfo: None = None


class AodhError(BaseModel):
    """Aodh's error body, on ``/v2``."""

    error_message: AodhFault


class AlarmAnswer(AlarmSpec):
    """An alarm as Aodh answers it: its definition, identity and state."""

    model_config = ConfigDict(extra="forbid")

    alarm_id: str
    state_reason: str
    state_timestamp: str
    timestamp: str


ERROR_TEXT = {
    "400": "invalid request: the offending field first in the message",
    "401": "no token, or an unknown one",
    "403": "the token's role or project may not do this",
    "404": "no such resource, or one the caller may not see",
    "413": "body larger than api.max_body_bytes",
    "429": "too many requests from this token: see Retry-After",
}


def _schemas(*models: type[BaseModel], mode: str = "validation") -> dict[str, Any]:
    """JSON schemas of ``models`` and the models they use, by name."""
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode=mode,  # type: ignore[arg-type]
        )
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _error(path: str, text: str) -> dict[str, Any]:
    name = "AodhError" if is_aodh_path(path) else "Error"
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"description": text, "content": {"application/json": {"schema": ref}}}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def refine(schema: dict[str, Any]) -> dict[str, Any]:
    """Correct FastAPI's document in place (and return it)."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(_schemas(Error, AodhError, AlarmSpec))
    schemas.update(_schemas(AlarmAnswer, mode="serialization"))
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            # Every route but the probes refuses a NUL character in its path or query.
            invalid = responses.pop("422", None) is not None or path not in UNAUTHENTICATED
            statuses: dict[str, str] = {}
            if invalid:
                statuses["400"] = ERROR_TEXT["400"]
            if path not in UNAUTHENTICATED:
                op["security"] = [{"AuthToken": []}, {"Bearer": []}]
                for code in ("401", "403", "429"):
                    statuses[code] = ERROR_TEXT[code]
            if "{" in path or (method, path) in UNKNOWN_HOST:
                statuses["404"] = ERROR_TEXT["404"]
            if (method, path) in CONFLICTS:
                statuses["409"] = CONFLICTS[(method, path)]
            if "requestBody" in op or method in ("post", "put", "patch"):
                statuses["413"] = ERROR_TEXT["413"]
            for code, text in statuses.items():
                responses.setdefault(code, _error(path, text))
            if (method, path) in ALARM_BODIES:
                op["requestBody"] = {"required": True, "content": _json("AlarmSpec")}
            if (method, path) in ALARM_ANSWERS:
                ok = responses.setdefault(ALARM_ANSWERS[(method, path)], {"description": "ok"})
                ok["content"] = _json("AlarmAnswer")
            if (method, path) == ("put", "/v2/alarms/{alarm_id}/state"):
                state = {"type": "string", "enum": list(STATES)}
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": state}},
                }
            if (method, path) == ("get", "/v2/alarms"):
                responses["200"]["content"] = {
                    "application/json": {
                        "schema": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/AlarmAnswer"},
                        }
                    }
                }
    return schema


def install_openapi(
    app: FastAPI, complete: Callable[[dict[str, Any]], dict[str, Any]] = refine
) -> None:
    """Make ``app.openapi()`` build (once) FastAPI's document as ``complete`` finishes it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

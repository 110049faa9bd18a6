"""Bearer tokens from the configuration, mapped to a role (and a project for members).

Accepted as ``X-Auth-Token`` (the OpenStack convention, what Aodh and Doctor clients
send) or ``Authorization: Bearer``. Tokens are looked up by their SHA-256 so the
comparison does not depend on how much of a guessed token matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fastapi import Request

from medevac.api.errors import ApiError
from medevac.config import ApiToken, Role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling."""

    name: str
    role: Role
    project_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_see_project(self, project_id: str) -> bool:
        return self.role in (Role.ADMIN, Role.READER) or self.project_id == project_id


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The token a request carries, from ``X-Auth-Token`` or ``Authorization: Bearer``."""
    token = headers.get("x-auth-token")
    if token is None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            token = value.strip()
    return token


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenRegistry:
    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._by_digest = {
            _digest(t.token.get_secret_value()): Principal(t.name, t.role, t.project_id)
            for t in tokens
        }

    def knows(self, token: str) -> bool:
        return _digest(token) in self._by_digest

    def authenticate(self, request: Request) -> Principal:
        token = presented_token(request.headers)
        if not token:
            raise ApiError(401, "missing credentials: send X-Auth-Token or Authorization: Bearer")
        principal = self._by_digest.get(_digest(token))
        if principal is None:
            raise ApiError(401, "invalid token")
        return principal


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the caller, who must hold one of ``roles`` (any if none)."""

    def dependency(request: Request) -> Principal:
        registry: TokenRegistry = request.app.state.tokens
        principal = registry.authenticate(request)
        if roles and principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise ApiError(403, f"role {principal.role.value!r} may not do this (needs {allowed})")
        request.state.principal = principal
        return principal

    return dependency

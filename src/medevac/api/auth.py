"""Who is calling: bearer tokens from the configuration, mapped to a role (and a
project for members), and, with ``[keystone]`` set, Keystone tokens.

Accepted as ``X-Auth-Token`` (the OpenStack convention, what Aodh and Doctor clients
send) or ``Authorization: Bearer``. Tokens are looked up by their SHA-256 so the
comparison does not depend on how much of a guessed token matches.

A token that is not one of the configuration's goes to Keystone once (``GET
/v3/auth/tokens`` as medevac's service user, on a thread: keystoneauth blocks), and
its answer is cached by the token's digest until ``cache_seconds`` pass or the token
expires, whichever is first: a revoked token is refused at most ``cache_seconds``
late. Neither a token nor the service user's password ever appears in a log line, an
error or an answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from medevac.api.errors import ApiError
from medevac.config import ApiToken, KeystoneConfig, Role
from medevac.storage.db import redact_url

log = logging.getLogger(__name__)


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


def keystone_principal(
    user_name: str,
    project_id: str | None,
    roles: Iterable[str],
    *,
    project_name: str | None = None,
    system: bool = False,
    reader_projects: Iterable[str] = ("admin",),
) -> Principal | None:
    """The API's view of a Keystone token's user, scope and roles: ``admin`` is an
    admin; ``member`` a member of the token's project; ``reader`` (without member)
    reads every project, but only scoped to the system or to one of
    ``reader_projects``: a reader of a tenant's project must not read the others'
    (the API has no reader of one project). None when no role gives access."""
    held = {r.lower() for r in roles}
    name = f"keystone:{user_name}"
    if "admin" in held:
        return Principal(name, Role.ADMIN, None)
    if "member" in held:
        return Principal(name, Role.MEMBER, project_id) if project_id else None
    if "reader" in held and (system or project_name in set(reader_projects)):
        return Principal(name, Role.READER, None)
    return None


class TokenCache:
    """Principals by token digest, each until its own deadline (monotonic seconds);
    at most ``size`` of them, the least recently used going first."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, until = entry
        if self.clock() >= until:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return principal

    def put(self, digest: bytes, principal: Principal, ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries[digest] = (principal, self.clock() + ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def trust_for(
    cache_seconds: float, expires_at: dt.datetime | None, now: dt.datetime | None = None
) -> float:
    """Seconds a validated token may be trusted: ``cache_seconds``, but never past
    its expiry."""
    if expires_at is None:
        return cache_seconds
    now = now or dt.datetime.now(dt.UTC)
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    return max(0.0, min(cache_seconds, (expires_at - now).total_seconds()))


class KeystoneUnavailable(Exception):
    """Keystone could not say whether a token is valid (the message says why)."""


class KeystoneValidator:
    """Validates tokens in Keystone as the service user of ``config``, and caches them."""

    def __init__(self, config: KeystoneConfig, clock: Callable[[], float] = time.monotonic):
        assert config.auth_url is not None and config.password is not None
        self.config = config
        self.cache = TokenCache(config.cache_size, clock)
        self._session: Any = None
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}

    def known(self, token: str) -> bool:
        return self.cache.get(_digest(token)) is not None

    def _sess(self) -> Any:
        if self._session is None:
            from keystoneauth1 import session
            from keystoneauth1.identity import v3

            c = self.config
            assert c.password is not None
            assert c.auth_url is not None
            auth = v3.Password(
                auth_url=c.auth_url,
                username=c.username,
                password=c.password.get_secret_value(),
                project_name=c.project_name,
                user_domain_name=c.user_domain_name,
                project_domain_name=c.project_domain_name,
            )
            verify: bool | str = str(c.cafile) if c.cafile else True
            self._session = session.Session(auth=auth, timeout=c.timeout, verify=verify)
        return self._session

    def validate_blocking(self, token: str) -> tuple[Principal | None, float] | None:
        """Keystone's answer for ``token``: None when it is not valid (unknown, expired
        or revoked), else its principal (None when no role gives access) and how long
        to trust that. Raises KeystoneUnavailable when Keystone cannot say."""
        from keystoneauth1 import access
        from keystoneauth1 import exceptions as ks

        c = self.config
        where = f"Keystone at {redact_url(c.auth_url or '')}"  # a password in it stays out
        try:
            resp = self._sess().get(
                "/auth/tokens",
                endpoint_filter={
                    "service_type": "identity",
                    "interface": c.interface,
                    "region_name": c.region_name,
                    "version": (3, 0),
                },
                headers={"X-Subject-Token": token},
                params={"nocatalog": ""},
            )
        except ks.NotFound:
            return None
        except ks.Unauthorized:
            raise KeystoneUnavailable(
                f"{where} refused medevac's service user {c.username!r}: check "
                "[keystone] username, password and project_name"
            ) from None
        except ks.Forbidden:
            raise KeystoneUnavailable(
                f"{where} does not let the service user {c.username!r} validate tokens "
                "(it needs the service or admin role)"
            ) from None
        except (ks.ConnectionError, ks.DiscoveryFailure) as exc:
            raise KeystoneUnavailable(f"{where} is unreachable ({type(exc).__name__})") from None
        except ks.EndpointNotFound:
            raise KeystoneUnavailable(
                f"{where} has no {c.interface} identity endpoint in its catalog "
                "(see [keystone] interface and region_name)"
            ) from None
        except ks.HttpError as exc:
            raise KeystoneUnavailable(f"{where} answered {exc.http_status}") from None
        except ks.ClientException as exc:
            raise KeystoneUnavailable(f"{where} failed ({type(exc).__name__})") from None
        ref = access.create(resp=resp)
        principal = keystone_principal(
            ref.username or ref.user_id or "?",
            ref.project_id,
            ref.role_names or (),
            project_name=ref.project_name,
            system=bool(ref.system_scoped),
            reader_projects=c.reader_projects,
        )
        return principal, trust_for(c.cache_seconds, ref.expires)

    async def principal(self, token: str) -> Principal | None:
        """The token's principal (None: valid, but no role gives access), from the
        cache or from Keystone. Raises ApiError 401 for an invalid token, 503 when
        Keystone cannot say. Concurrent requests with one new token share one call,
        which goes on if the request that started it goes away."""
        digest = _digest(token)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(token, digest))
            self._pending[digest] = pending
            pending.add_done_callback(lambda done: self._settled(digest, done))
        return await asyncio.shield(pending)

    def _settled(self, digest: bytes, done: asyncio.Future[Principal | None]) -> None:
        self._pending.pop(digest, None)
        if not done.cancelled():
            done.exception()  # retrieved: no warning when every waiter went away

    async def _look_up(self, token: str, digest: bytes) -> Principal | None:
        try:
            answer = await asyncio.to_thread(self.validate_blocking, token)
        except KeystoneUnavailable as exc:
            log.warning("cannot validate a token: %s", exc)
            raise ApiError(503, f"cannot validate the token: {exc}") from None
        except Exception as exc:  # never a 500, whose text could hold the token
            log.warning("cannot validate a token: %s", type(exc).__name__)
            raise ApiError(
                503, f"cannot validate the token in Keystone ({type(exc).__name__})"
            ) from None
        if answer is None:
            raise ApiError(
                401, "invalid token: Keystone does not accept it (unknown, expired or revoked)"
            )
        principal, ttl = answer
        if principal is not None:
            self.cache.put(digest, principal, ttl)
        return principal


class TokenRegistry:
    """The configuration's tokens, and Keystone's when ``keystone`` is given."""

    def __init__(
        self, tokens: Iterable[ApiToken], keystone: KeystoneValidator | None = None
    ) -> None:
        self._by_digest = {
            _digest(t.token.get_secret_value()): Principal(t.name, t.role, t.project_id)
            for t in tokens
        }
        self.keystone = keystone

    def knows(self, token: str) -> bool:
        """Whether ``token`` is known to be valid now (a static one, or a Keystone one
        validated and cached): the rate limiter gives those a bucket of their own."""
        return _digest(token) in self._by_digest or (
            self.keystone is not None and self.keystone.known(token)
        )

    async def authenticate(self, request: Request) -> Principal:
        token = presented_token(request.headers)
        if not token:
            raise ApiError(401, "missing credentials: send X-Auth-Token or Authorization: Bearer")
        principal = self._by_digest.get(_digest(token))
        if principal is not None:
            return principal
        if self.keystone is None:
            raise ApiError(401, "invalid token")
        found = await self.keystone.principal(token)
        if found is None:
            raise ApiError(
                403, "the token's roles give no access here (needs admin, member or reader)"
            )
        return found


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller, who must hold one of ``roles`` (any if none)."""

    async def dependency(request: Request) -> Principal:
        registry: TokenRegistry = request.app.state.tokens
        principal = await registry.authenticate(request)
        if roles and principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise ApiError(403, f"role {principal.role.value!r} may not do this (needs {allowed})")
        request.state.principal = principal
        return principal

    return dependency

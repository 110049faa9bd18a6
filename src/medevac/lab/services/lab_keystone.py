"""Keystone tokens for the lab's Nova and Neutron (``lab up --identity keystone``).

What keystonemiddleware's auth_token does for a real Nova or Neutron, reduced to what
the lab needs: each token is validated in the lab's Keystone (``GET /v3/auth/tokens``
with the token as its own subject, which Keystone's policy allows every token) and
its user, project and roles are cached for a short while (a revoked token stops
working that much later, as keystonemiddleware's cache does). Imported as a top-level
module by the service scripts beside it; uses the standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Identity:
    """Who a valid token stands for."""

    user_id: str
    user_name: str
    project_id: str | None
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class KeystoneUnreachable(Exception):
    """Keystone did not answer whether the token is valid."""


class KeystoneTokens:
    """Validates tokens in the Keystone at ``auth_url`` (its v3 URL), with a cache."""

    def __init__(self, auth_url: str, cache_seconds: float = CACHE_SECONDS) -> None:
        self.auth_url = auth_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._lock = threading.Lock()

    def identity(self, token: str) -> Identity | None:
        """The token's identity; None when Keystone does not accept it."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None and cached[1] > now:
                return cached[0]
        found = self._validate(token)
        if found is None:
            return None
        identity, expires_in = found
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[token] = (identity, now + min(self.cache_seconds, expires_in))
        return identity

    def _validate(self, token: str) -> tuple[Identity, float] | None:
        req = urllib.request.Request(  # noqa: S310 (the lab's Keystone, on loopback)
            self.auth_url + "/auth/tokens?nocatalog",
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                body = json.load(resp)["token"]
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 404):
                return None
            raise KeystoneUnreachable(f"keystone answered {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise KeystoneUnreachable(f"keystone unreachable: {type(exc).__name__}") from None
        expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
        left = (expires - dt.datetime.now(dt.UTC)).total_seconds()
        project = body.get("project") or {}
        identity = Identity(
            user_id=body["user"]["id"],
            user_name=body["user"]["name"],
            project_id=project.get("id"),
            roles=tuple(r["name"] for r in body.get("roles", [])),
        )
        return identity, max(0.0, left)

    def refusal(self, status: str, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
        """A WSGI answer for a token refused (401) or one Keystone could not judge (503)."""
        code = int(status.split()[0])
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if code == 401:
            headers.append(("WWW-Authenticate", f'Keystone uri="{self.auth_url}"'))
        return status, headers, body

    def judge(self, token: str | None) -> Identity | tuple[str, list[tuple[str, str]], bytes]:
        """The token's identity, or the WSGI answer refusing the request."""
        if not token:
            return self.refusal(
                "401 Unauthorized", "The request you have made requires authentication."
            )
        try:
            identity = self.identity(token)
        except KeystoneUnreachable as exc:
            return self.refusal("503 Service Unavailable", f"cannot validate the token: {exc}")
        if identity is None:
            return self.refusal(
                "401 Unauthorized", "The request you have made requires authentication."
            )
        return identity

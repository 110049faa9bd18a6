"""Limits on what a caller may send: body size (413) and request rate per token (429)."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medevac.api.auth import presented_token
from medevac.api.errors import error_body, is_aodh_path, send_json


class BodySizeLimit:
    """ASGI middleware: 413 when Content-Length or the streamed body passes ``limit``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.limit} bytes"
        await send_json(send, 413, error_body(413, message, aodh=is_aodh_path(scope["path"])))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(scope, send)
                    return
        # Read the body first (bounded by the limit), then replay it to the app, so an
        # oversized chunked body is refused with 413 before any handler runs.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class TokenRateLimit:
    """ASGI middleware: a token bucket per API token (per client address for requests
    without a token ``known`` accepts), held in memory; an empty bucket answers 429 with
    Retry-After.

    ``rate`` requests per second on average, ``burst`` at once; ``exempt`` paths (the
    liveness and readiness probes) are never limited. At most ``max_buckets`` are kept, the least
    recently used dropped first, so random tokens cannot grow memory without bound.
    """

    def __init__(
        self,
        app: ASGIApp,
        rate: float,
        burst: int,
        *,
        known: Callable[[str], bool] = lambda _: True,
        exempt: tuple[str, ...] = ("/healthz", "/readyz"),
        max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst
        self.known = known
        self.exempt = exempt
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def _key(self, scope: Scope) -> bytes:
        token = presented_token(Headers(scope=scope))
        if token and self.known(token):  # unknown ones must not each get a fresh bucket
            return b"t" + hashlib.sha256(token.encode()).digest()
        client = scope.get("client") or ("?", 0)
        return b"a" + str(client[0]).encode()

    def wait(self, key: bytes) -> float:
        """Take one request from ``key``'s bucket: 0 if there was one, else the seconds
        until there will be."""
        now = self.clock()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1:
            tokens -= 1
            wait = 0.0
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate <= 0 or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        wait = self.wait(self._key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        message = f"too many requests: retry after {retry_after} s"
        body = error_body(429, message, aodh=is_aodh_path(scope["path"]))
        await send_json(send, 429, body, {"retry-after": str(retry_after)})

"""Limits on what a caller may send: body size (413), NUL characters (400) and request
rate per token (429)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medevac.api.auth import presented_token
from medevac.api.errors import error_body_for, send_json


class BodySizeLimit:
    """ASGI middleware: 413 when Content-Length or the streamed body passes ``limit``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"request body larger than {self.limit} bytes"
        await send_json(send, 413, error_body_for(scope["path"], 413, message))

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


NUL = "\x00"
NUL_PROBLEM = "holds a NUL character (%00, \\u0000), which no name, id or URL may hold"


def nul_in_json(document: Any) -> str | None:
    """Where in a parsed JSON document a string (or an object's key) holds a NUL: the
    first one found, depth first (without recursion: any nesting is fine)."""
    todo: list[tuple[str, Any]] = [("", document)]
    while todo:
        where, value = todo.pop()
        if isinstance(value, str):
            if NUL in value:
                return where or "(body)"
            continue
        if isinstance(value, dict):
            items: list[tuple[Any, Any]] = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            continue
        for key, item in reversed(items):
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and NUL in key:
                return here
            todo.append((here, item))
    return None


def nul_in_request(scope: Scope, body: bytes) -> str | None:
    """What part of a request holds a NUL: its path, a query parameter, or a string
    of its JSON body (a body that is not JSON is the route's to refuse)."""
    if NUL in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if NUL in name or NUL in value:
                return f"query parameter {name.replace(NUL, '%00')!r}"
    if b"\\u0000" in body:  # the only way JSON can spell a NUL in a string
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None  # not JSON: the route refuses it
        where = nul_in_json(document)
        return None if where is None else where.replace(NUL, "\\u0000")
    return None


class NulRefusal:
    """ASGI middleware: 400 naming where a request holds a NUL character, in its path, a
    query parameter or a string of its JSON body. PostgreSQL cannot store one in text:
    the write, or the query, would fail as a 500 (and a delivery with it, its chunk).
    The probes (``exempt``) read no input."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ("/healthz", "/readyz")) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        # The body is bounded: BodySizeLimit, outside this, has read it whole already.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        where = nul_in_request(scope, body)
        if where is not None:
            message_text = f"{where}: {NUL_PROBLEM}"
            path = scope["path"].replace(NUL, "")
            await send_json(send, 400, error_body_for(path, 400, message_text))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
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
        body = error_body_for(scope["path"], 429, message)
        await send_json(send, 429, body, {"retry-after": str(retry_after)})

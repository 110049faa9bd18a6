"""Webhook POSTs over kept-alive HTTP/1.1 connections, answers parsed by llhttp.

A failed host's burst is a hundred POSTs to a few consumers, and on a two-core
controller their CPU is the notification path's cost. A general client spends most of
it on what a webhook never uses (cookies, redirects, proxies, tracing, header
multidicts): aiohttp needed 0.12 ms of CPU per webhook over loopback where this client
needs 0.045 ms (``bench/notify_path.py`` measures the whole path). What is left is a
connection pool per consumer origin, the request head written by hand, and the answer
parsed by httptools (the llhttp binding uvicorn serves with).

Only what Aodh's REST notifier does: POST a JSON body, read the status; credentials in
the URL become Basic auth; 3xx is not followed (the caller counts it as a failure).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import httptools

from medevac.notifier.alarms import ActionTargets, literal_address

_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"  # already valid in a request target: left as is


class SendError(Exception):
    """The POST got no HTTP answer: refused, reset, timed out or garbled."""


@dataclass(frozen=True)
class Target:
    """Where one URL's POST goes, and its head without the per-request headers."""

    origin: str  # scheme://host:port, the pool's key (never the URL's credentials)
    host: str
    port: int
    tls: bool
    head: bytes  # "POST path HTTP/1.1" and the fixed headers

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SendError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise SendError("invalid port") from None
        host = parts.hostname
        try:
            ascii_host = host.encode("idna").decode() if not host.isascii() else host
        except UnicodeError:
            raise SendError("invalid host name") from None
        netloc = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
        if parts.port is not None:
            netloc += f":{parts.port}"
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        lines = [f"POST {path} HTTP/1.1", f"Host: {netloc}", "User-Agent: medevac"]
        if parts.username is not None:
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            lines.append(f"Authorization: Basic {base64.b64encode(cred.encode()).decode()}")
        head = ("\r\n".join(lines) + "\r\n").encode()
        return cls(f"{parts.scheme}://{netloc}", ascii_host, port, tls, head)


class _Connection(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[int] | None = None
        self.reusable = False
        self.closed = False
        self.heard = False  # any byte of the current answer arrived
        self.status = 0  # the current answer's, once its head is read

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.status >= 200 and self.answer is not None and not self.answer.done():
            self.answer.set_result(self.status)  # an answer whose end is the close
        self._fail(SendError(f"connection closed: {exc}" if exc else "connection closed"))

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self.close()  # bytes nobody asked for (a 408 before a close, say): unusable
            return
        self.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(SendError("the consumer switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(SendError(f"malformed answer: {exc}"))
            self.close()

    # the parser's side
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if self.status < 200:  # 1xx: an interim answer, the real one follows
            self.status = 0
            return
        if self.answer is None or self.answer.done():
            self.close()  # a second answer to one request: the connection is unusable
            return
        self.reusable = self.parser.should_keep_alive()
        self.answer.set_result(self.status)

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)

    # the pool's side
    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.reusable = False
        self.heard = False
        self.status = 0
        self.transport.write(data)
        return self.answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Slots:
    """A semaphore whose slot can also be taken without waiting, so that a POST can
    start in its caller's stack (``WebhookClient.begin``)."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut  # ``give`` hands its slot over directly
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed over, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            raise

    def give(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


@dataclass
class _Pool:
    """The connections to one consumer origin, at most ``limit`` of them."""

    limit: int
    idle: list[_Connection] = field(default_factory=list)
    opening: int = 0  # connections being opened ahead of need (``connect``)
    slots: _Slots = field(init=False)

    def __post_init__(self) -> None:
        self.slots = _Slots(self.limit)

    def take_idle(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def ready(self) -> int:
        return sum(not c.closed for c in self.idle)

    def keep(self, conn: _Connection) -> None:
        if len(self.idle) < self.limit:
            self.idle.append(conn)
        else:  # opened ahead of a burst that used fewer: not kept past the pool's size
            conn.close()


@dataclass(frozen=True)
class Begun:
    """A POST whose request is already written; ``WebhookClient.finish`` awaits it."""

    target: Target
    pool: _Pool
    conn: _Connection
    data: bytes
    answer: asyncio.Future[int]


class WebhookClient:
    """POSTs to consumers: a pool of kept-alive connections per origin, so a slow
    consumer holds only its own connections, never another's."""

    def __init__(
        self,
        *,
        connections_per_origin: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
        targets: ActionTargets | None = None,
    ) -> None:
        self.connections_per_origin = connections_per_origin
        self.timeout = timeout
        self.tls = tls
        # Where a connection may go, checked on the addresses a name resolves to when
        # it is opened (not only when the alarm was created): a name that now points
        # into a refused network is never connected to.
        self.targets = targets
        self._pools: dict[str, _Pool] = {}
        self._targets: dict[str, Target] = {}

    def target(self, url: str) -> Target:
        t = self._targets.get(url)
        if t is None:
            if len(self._targets) > 10_000:  # URLs come from alarms: keep the cache bounded
                self._targets.clear()
            t = self._targets[url] = Target.parse(url)
        return t

    def _pool(self, target: Target) -> _Pool:
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool(self.connections_per_origin)
        return pool

    async def _address(self, target: Target) -> str:
        """The address to connect to: the first that ``target.host`` resolves to and
        the action targets allow (connecting to it, not the name, leaves no room for
        the name to point elsewhere in between)."""
        literal = literal_address(target.host)
        if literal is not None:
            addresses = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM),
                    self.timeout,
                )
            except (OSError, TimeoutError) as exc:
                raise SendError(f"cannot resolve {target.host}: {type(exc).__name__}") from None
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if self.targets is None:
            return str(addresses[0])
        refused = []
        for address in addresses:
            why = self.targets.refusal(address)
            if why is None:
                return str(address)
            refused.append(f"{address} {why}")
        raise SendError(f"refused: {'; '.join(refused)}")

    async def _open(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        address = await self._address(target)
        try:
            _, conn = await loop.create_connection(
                _Connection,
                address,
                target.port,
                ssl=(self.tls or ssl.create_default_context()) if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
        except ssl.SSLError as exc:
            raise SendError(f"TLS: {exc.reason or exc}") from None
        except OSError as exc:
            raise SendError(exc.strerror or type(exc).__name__) from None
        return conn

    def reserve(self, url: str, posts: int) -> int:
        """How many connections to open so that ``posts`` POSTs at once to ``url``'s
        consumer need no handshake (within the pool's size; those idle or already
        reserved count). The caller then owes one ``connect`` for each."""
        pool = self._pool(self.target(url))
        n = max(0, min(posts, pool.limit) - pool.ready() - pool.opening)
        pool.opening += n
        return n

    async def connect(self, url: str) -> None:
        """Open one reserved connection to ``url``'s consumer and leave it idle in the
        pool. Raises SendError or TimeoutError."""
        target = self.target(url)
        pool = self._pool(target)
        try:
            async with asyncio.timeout(self.timeout):
                conn = await self._open(target)
        finally:
            pool.opening -= 1
        pool.keep(conn)

    @staticmethod
    def _request(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        length = f"{extra}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        return b"".join((target.head, length, body))

    def begin(self, url: str, body: bytes, headers: Mapping[str, str]) -> Begun | None:
        """Write the request now, in the caller's stack, if a kept-alive connection is
        idle and a slot free; else None (``post`` then waits for them). A Begun must
        be passed to ``finish``, which reads its answer and frees its slot."""
        target = self.target(url)
        pool = self._pool(target)
        if not pool.slots.try_take():
            return None
        conn = pool.take_idle()
        if conn is None:
            pool.slots.give()
            return None
        data = self._request(target, body, headers)
        return Begun(target, pool, conn, data, conn.request(data))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body``; returns the answer's status. Raises SendError, or TimeoutError
        after ``timeout`` (waiting for a connection included)."""
        target = self.target(url)
        pool = self._pool(target)
        data = self._request(target, body, headers)
        async with asyncio.timeout(self.timeout):
            await pool.slots.take()
            try:
                return await self._exchange(target, pool, data, pool.take_idle())
            finally:
                pool.slots.give()

    async def finish(self, begun: Begun) -> int:
        """``post`` for a request ``begin`` already wrote."""
        async with asyncio.timeout(self.timeout):
            try:
                return await self._exchange(
                    begun.target, begun.pool, begun.data, begun.conn, begun.answer
                )
            finally:
                begun.pool.slots.give()

    async def _exchange(
        self,
        target: Target,
        pool: _Pool,
        data: bytes,
        conn: _Connection | None,
        answer: asyncio.Future[int] | None = None,
    ) -> int:
        """The answer to ``data``, written over the kept-alive ``conn`` (if any; its
        ``answer`` when ``begin`` already wrote it); once more over a new connection
        when the kept one turned out closed."""
        if conn is not None:
            if answer is None:
                answer = conn.request(data)
            try:
                return await self._settle(pool, conn, answer)
            except SendError:
                # The consumer may have closed it while idle (its FIN crossing our
                # request): once more on a new connection.
                if conn.heard:
                    raise
        conn = await self._open(target)
        return await self._settle(pool, conn, conn.request(data))

    @staticmethod
    async def _settle(pool: _Pool, conn: _Connection, answer: asyncio.Future[int]) -> int:
        try:
            status = await answer
        except BaseException:
            conn.close()  # its answer is unread or partial: never reused
            raise
        if conn.reusable and not conn.closed:
            pool.keep(conn)
        else:
            conn.close()
        return status

    def idle_connections(self, url: str) -> int:
        pool = self._pools.get(self.target(url).origin)
        return 0 if pool is None else pool.ready()

    async def close(self) -> None:
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports close

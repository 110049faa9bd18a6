"""The webhook client against real sockets on loopback: servers that keep connections,
close them, answer late, answer garbage, or speak TLS."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from medevac.notifier.webhooks import SendError, WebhookClient
from tests.conftest import free_port
from tests.tls import self_signed

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Answer = Callable[[int, dict[str, str], bytes], Awaitable[bytes | None]]


class Server:
    """A bare HTTP/1.1 server: ``answer(n, headers, body)`` gives the bytes sent back
    for the n-th request (None: close without answering). Records each connection's
    requests (request line, headers, body)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.connections: list[list[tuple[str, dict[str, str], bytes]]] = []
        self.server: asyncio.Server | None = None

    @property
    def requests(self) -> list[tuple[str, dict[str, str], bytes]]:
        return [r for conn in self.connections for r in conn]

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=tls)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mine: list[tuple[str, dict[str, str], bytes]] = []
        self.connections.append(mine)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                line, *rest = head.split("\r\n")
                headers = {k.lower(): v for k, _, v in (h.partition(": ") for h in rest if h)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                mine.append((line, headers, body))
                n = len(self.requests)
                out = OK if self.answer is None else await self.answer(n, headers, body)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if out.startswith(b"HTTP/1.0"):
                    break  # its answer ends with the connection
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def client(**kw: object) -> WebhookClient:
    settings: dict[str, object] = {"connections_per_origin": 4, "timeout": 2.0}
    settings.update(kw)
    return WebhookClient(**settings)  # type: ignore[arg-type]


Scenario = Callable[[Server, WebhookClient, str], Awaitable[None]]


def run_against(
    scenario: Scenario,
    answer: Answer | None = None,
    server_tls: ssl.SSLContext | None = None,
    **client_settings: object,
) -> None:
    """Run ``scenario(server, client, url)`` against a fresh server and client."""

    async def main() -> None:
        srv = Server(answer)
        port = await srv.start(server_tls)
        c = client(**client_settings)
        try:
            scheme = "https" if server_tls else "http"
            await scenario(srv, c, f"{scheme}://127.0.0.1:{port}/")
        finally:
            await c.close()
            await srv.stop()

    asyncio.run(main())


async def slow(n: int, headers: dict[str, str], body: bytes) -> bytes | None:
    await asyncio.sleep(0.2)
    return OK


def test_a_post_carries_the_body_auth_and_headers_and_reuses_its_connection() -> None:
    async def scenario(srv: Server, c: WebhookClient, base: str) -> None:
        url = base.replace("http://", "http://alice:s%40cret@") + "hook/é?x=1&y=a b"
        for i in range(3):
            sent = {"X-Medevac-Delivery-Id": f"d{i}"}
            assert await c.post(url, b'{"n": %d}' % i, sent) == 200
        assert len(srv.connections) == 1  # kept alive
        line, headers, body = srv.requests[2]
        assert line == "POST /hook/%C3%A9?x=1&y=a%20b HTTP/1.1"
        assert headers["host"] == base.removeprefix("http://").rstrip("/")
        assert headers["authorization"] == "Basic " + base64.b64encode(b"alice:s@cret").decode()
        assert headers["x-medevac-delivery-id"] == "d2"
        assert body == b'{"n": 2}'
        # The pool is keyed without the credentials.
        assert c.target(url).origin == base.rstrip("/")

    run_against(scenario)


def test_connection_close_and_an_idle_close_by_the_consumer_cost_nothing() -> None:
    async def answer(n: int, headers: dict[str, str], body: bytes) -> bytes | None:
        if n == 1:
            return b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        if n == 3:
            return None  # read the request, then closed: the race with an idle close
        return OK

    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        assert await c.post(url, b"1", {}) == 204
        assert c.idle_connections(url) == 0  # the consumer said close
        assert await c.post(url, b"2", {}) == 200
        assert c.idle_connections(url) == 1
        # Request 3 goes over the idle connection and is dropped unanswered; the
        # client sends it once more on a new connection (request 4).
        assert await c.post(url, b"3", {}) == 200
        assert [b for _, _, b in srv.requests] == [b"1", b"2", b"3", b"3"]
        assert len(srv.connections) == 3

    run_against(scenario, answer)


def test_answers_ended_by_close_and_interim_answers_are_read() -> None:
    async def answer(n: int, headers: dict[str, str], body: bytes) -> bytes | None:
        if n == 1:
            interim = b"HTTP/1.1 100 Continue\r\n\r\n"
            return interim + b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
        if n == 2:
            chunked = b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            return b"HTTP/1.1 500 Oops\r\n" + chunked
        return b"HTTP/1.0 201 Created\r\n\r\nbody until the close"

    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        assert await c.post(url, b"", {}) == 202
        assert await c.post(url, b"", {}) == 500
        assert len(srv.connections) == 1
        # HTTP/1.0 without a length: the answer ends when the server closes.
        assert await c.post(url, b"", {}) == 201
        assert c.idle_connections(url) == 0

    run_against(scenario, answer)


def test_an_answer_nobody_asked_for_retires_the_connection() -> None:
    async def answer(n: int, headers: dict[str, str], body: bytes) -> bytes | None:
        if n == 1:  # and, unasked, what a server sends before closing an idle one
            return OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
        return OK

    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        assert await c.post(url, b"1", {}) == 200
        await asyncio.sleep(0.05)
        assert c.idle_connections(url) == 0
        assert await c.post(url, b"2", {}) == 200  # not the 408
        assert len(srv.connections) == 2

    run_against(scenario, answer)


def test_garbage_refusal_and_silence_are_errors_and_never_reused() -> None:
    async def garbage(n: int, headers: dict[str, str], body: bytes) -> bytes | None:
        return b"SMTP ready\r\n\r\n"

    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        with pytest.raises(SendError, match="malformed answer"):
            await c.post(url, b"", {})
        assert c.idle_connections(url) == 0
        with pytest.raises(SendError):
            await c.post(f"http://127.0.0.1:{free_port()}/", b"", {})
        silent = Server(lambda *_: asyncio.sleep(5, OK))
        silent_url = f"http://127.0.0.1:{await silent.start()}/"
        try:
            with pytest.raises(TimeoutError):
                await c.post(silent_url, b"", {})
            assert c.idle_connections(silent_url) == 0
        finally:
            await silent.stop()

    run_against(scenario, garbage, timeout=0.3)


def test_a_slow_consumer_gets_at_most_its_connections() -> None:
    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        statuses = await asyncio.gather(*(c.post(url, b"", {}) for _ in range(9)))
        assert statuses == [200] * 9
        assert len(srv.connections) == 3

    run_against(scenario, slow, connections_per_origin=3)


def test_https_consumers_are_verified(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        assert await c.post(url, b"{}", {}) == 200
        assert await c.post(url, b"{}", {}) == 200
        assert len(srv.connections) == 1
        stranger = client(tls=ssl.create_default_context())
        try:
            with pytest.raises(SendError, match="TLS"):
                await stranger.post(url, b"{}", {})
        finally:
            await stranger.close()

    trusting = ssl.create_default_context(cafile=str(cert))
    run_against(scenario, server_tls=server_tls, tls=trusting)


def test_a_begun_post_is_written_at_once_and_its_slot_comes_back() -> None:
    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        assert c.begin(url, b"x", {}) is None  # no connection ready: the caller waits
        assert c.reserve(url, 1) == 1
        await c.connect(url)
        begun = c.begin(url, b"early", {})
        assert begun is not None and c.begin(url, b"y", {}) is None  # one idle only
        assert await c.finish(begun) == 200
        assert [b for _, _, b in srv.requests] == [b"early"]
        assert await asyncio.gather(*(c.post(url, b"z", {}) for _ in range(3))) == [200] * 3
        assert len(srv.connections) <= 2

    run_against(scenario, connections_per_origin=2)


def test_a_cancelled_wait_for_a_connection_loses_no_slot() -> None:
    async def scenario(srv: Server, c: WebhookClient, url: str) -> None:
        holders = [asyncio.create_task(c.post(url, b"h", {})) for _ in range(2)]
        await asyncio.sleep(0.05)
        waiters = [asyncio.create_task(c.post(url, b"w", {})) for _ in range(2)]
        await asyncio.sleep(0.05)
        waiters[0].cancel()  # waiting for a slot
        assert await asyncio.gather(*holders, waiters[1]) == [200] * 3
        # Both slots still there: two more at once take 0.2 s, not 0.4 s.
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.gather(*(c.post(url, b"a", {}) for _ in range(2))) == [200] * 2
        assert asyncio.get_running_loop().time() - t0 < 0.35
        assert [b for _, _, b in srv.requests].count(b"w") == 1

    run_against(scenario, slow, connections_per_origin=2)


def test_a_name_resolving_into_a_refused_network_is_never_connected_to() -> None:
    import ipaddress

    from medevac.notifier.alarms import ActionTargets
    from medevac.notifier.webhooks import SendError

    loopback = ActionTargets(allow=(ipaddress.ip_network("127.0.0.0/8"),))

    async def refused(srv: Server, c: WebhookClient, url: str) -> None:
        named = url.replace("127.0.0.1", "localhost")  # accepted at creation: a name
        with pytest.raises(SendError, match=r"refused: .*is a loopback address"):
            await c.post(named, b"{}", {})
        assert srv.requests == []  # nothing was sent

    async def allowed(srv: Server, c: WebhookClient, url: str) -> None:
        assert await c.post(url.replace("127.0.0.1", "localhost"), b"{}", {}) == 200
        assert len(srv.requests) == 1

    run_against(refused, targets=ActionTargets())
    run_against(allowed, targets=loopback)

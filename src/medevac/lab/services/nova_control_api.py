"""The lab Nova service's control API: JSON over HTTP on loopback, no auth.

Its routes are listed in nova_service's docstring; each calls the lab (its hosts,
domains, servers and heartbeat timings).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nova_lab import Lab

LOG = logging.getLogger("lab.nova_service")

Route = tuple[str, re.Pattern[str], Callable[[re.Match[str], dict[str, Any]], Any]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def make_control_handler(lab: Lab) -> type[BaseHTTPRequestHandler]:
    computes = lab.computes
    routes: list[Route] = [
        ("GET", re.compile(r"^/healthz$"), lambda m, b: {"ok": True}),
        ("GET", re.compile(r"^/info$"), lambda m, b: lab.info()),
        ("GET", re.compile(r"^/hosts$"), lambda m, b: computes.hosts_state()),
        ("GET", re.compile(r"^/domains$"), lambda m, b: computes.domains()),
        ("GET", re.compile(r"^/domains/all$"), lambda m, b: computes.all_domains()),
        ("GET", re.compile(r"^/heartbeat$"), lambda m, b: lab.heartbeat_timings()),
        ("POST", re.compile(r"^/heartbeat$"), lambda m, b: lab.set_heartbeat_timings(b)),
        (
            "POST",
            re.compile(r"^/hosts/([^/]+)/stop$"),
            lambda m, b: computes.stop_host(m.group(1), b),
        ),
        (
            "POST",
            re.compile(r"^/hosts/([^/]+)/start$"),
            lambda m, b: computes.start_host(m.group(1), b),
        ),
        (
            "POST",
            re.compile(r"^/hosts/([^/]+)/power-cut$"),
            lambda m, b: computes.power_cut(m.group(1)),
        ),
        (
            "POST",
            re.compile(r"^/servers/([^/]+)/crash$"),
            lambda m, b: computes.crash_server(m.group(1)),
        ),
        (
            "POST",
            re.compile(r"^/servers/([^/]+)/heal$"),
            lambda m, b: computes.heal_server(m.group(1)),
        ),
    ]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("control %s", format % args)

        def _send(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = {}
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise HttpError(400, "body is not JSON") from None
                    if not isinstance(body, dict):
                        raise HttpError(400, "body must be a JSON object")
                known_path = False
                for meth, rx, fn in routes:
                    m = rx.match(path)
                    if not m:
                        continue
                    known_path = True
                    if meth != method:
                        continue
                    return self._send(200, fn(m, body))
                if known_path:
                    raise HttpError(405, "method not allowed")
                raise HttpError(404, f"no such path {path}")
            except HttpError as exc:
                self._send(exc.status, {"error": exc.message})
            except Exception as exc:
                LOG.exception("control %s %s failed", method, path)
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler

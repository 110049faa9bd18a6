"""Serving Nova's API over HTTP on loopback, with the lab's identity (lab Nova service).

The identity headers Nova's stubbed Keystone middleware reads are filled in from the
``X-Auth-Token``: from its form without Keystone (see nova_service's docstring), or,
with the lab's Keystone, from what Keystone says of it (an invalid token: 401).
"""

from __future__ import annotations

import logging
import re
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from lab_keystone import KeystoneTokens

LOG = logging.getLogger("lab.nova_service")

ADMIN_PROJECT = "admin"
TOKEN_RE = re.compile(r"^lab-project-(?P<project>.+?)(?:-user-(?P<user>.+))?$")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("api %s - %s", self.address_string(), format % args)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def identity_wrapper(app: WsgiApp, keystone: KeystoneTokens | None = None) -> WsgiApp:
    """Fills in the identity headers Nova's stubbed Keystone reads."""
    if keystone is not None:
        return keystone_identity(app, keystone)

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        token = environ.get("HTTP_X_AUTH_TOKEN", "") or ""
        m = TOKEN_RE.match(token)
        if m:
            project = m.group("project")
            user = m.group("user") or "lab-user"
            if user == "admin":
                user = "lab-admin-user"  # 'admin' would make it an admin
            roles = "member,reader"
        else:
            project, user, roles = ADMIN_PROJECT, "admin", "admin,member,reader"
        environ["HTTP_X_AUTH_USER"] = user
        environ["HTTP_X_AUTH_PROJECT_ID"] = project
        environ["HTTP_X_ROLES"] = roles
        environ["HTTP_X_USER_ID"] = user
        environ["HTTP_X_PROJECT_ID"] = project
        return app(environ, start_response)

    return wrapped


def keystone_identity(app: WsgiApp, keystone: KeystoneTokens) -> WsgiApp:
    """The headers from the token's identity in Keystone, as keystonemiddleware and
    Nova's stub would set them (the stub makes user id 'admin' the admin); the
    versions document at / needs no token, as in a real Nova."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if not token and environ.get("PATH_INFO", "/") in ("", "/"):
            return app(environ, start_response)
        judged = keystone.judge(token)
        if isinstance(judged, tuple):
            status, headers, body = judged
            start_response(status, headers)
            return [body]
        user = "admin" if judged.is_admin else judged.user_id
        project = judged.project_id or ""
        environ["HTTP_X_AUTH_USER"] = user
        environ["HTTP_X_AUTH_PROJECT_ID"] = project
        environ["HTTP_X_ROLES"] = ",".join(judged.roles)
        environ["HTTP_X_USER_ID"] = user
        environ["HTTP_X_PROJECT_ID"] = project
        return app(environ, start_response)

    return wrapped


def serve_in_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    t = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name=name
    )
    t.start()
    return t

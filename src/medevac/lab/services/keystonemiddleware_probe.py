"""Two tiny WSGI apps on loopback, for the identity benchmark: one bare, one behind
keystonemiddleware's auth_token (the OpenStack services' own validation, with its
in-process token cache), both served by waitress in this process.

Run with the lab venv's interpreter (keystonemiddleware lives there); prints one JSON
line with both ports once they listen, then serves until killed.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from keystonemiddleware import auth_token  # type: ignore[import-not-found,unused-ignore]

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Who the request stands for, as auth_token's headers say (empty when bare)."""
    body = json.dumps(
        {
            "user": environ.get("HTTP_X_USER_NAME"),
            "project_id": environ.get("HTTP_X_PROJECT_ID"),
            "roles": environ.get("HTTP_X_ROLES"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def serve(app: Wsgi, sock: socket.socket) -> None:
    waitress.serve(app, sockets=[sock], threads=4, _quiet=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--auth-url", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--project", required=True)
    args = p.parse_args()
    protected = auth_token.AuthProtocol(
        whoami,
        {
            "auth_type": "password",
            "auth_url": args.auth_url,
            "www_authenticate_uri": args.auth_url,
            "username": args.username,
            "password": args.password,
            "project_name": args.project,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
            "delay_auth_decision": "false",
            "token_cache_time": "300",  # its default: validated tokens kept in process
        },
    )
    bare_sock, protected_sock = listening(), listening()
    for app, sock in ((whoami, bare_sock), (protected, protected_sock)):
        threading.Thread(target=serve, args=(app, sock), daemon=True).start()
    print(
        json.dumps(
            {"bare": bare_sock.getsockname()[1], "protected": protected_sock.getsockname()[1]}
        ),
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()

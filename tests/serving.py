"""An ASGI app under a real uvicorn on loopback, in a thread, for as long as a test needs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from medevac.config import ApiConfig
from medevac.serving import base_url, server_config
from tests.conftest import free_port, wait_for


@contextmanager
def served(app: ASGIApp, api: ApiConfig | None = None) -> Iterator[str]:
    """Serve ``app`` as ``api`` says (default: a free port on 127.0.0.1), logging through
    the standard loggers; yields the base URL."""
    api = api or ApiConfig(port=free_port())
    server = uvicorn.Server(server_config(app, api, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for("the server to start", lambda: server.started, timeout=10)
        yield base_url(api)
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""The operators' dashboard: static pages under ``/ui`` that read the API in the browser.

The files hold no data and need no token: the page asks for one, keeps it in the tab's
sessionStorage and sends it as a header on each API call (never in a URL). A strict
content security policy keeps the pages to this controller's own scripts and API.
"""

from __future__ import annotations

from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_DIR = Path(__file__).parent / "ui"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # The pages change with the package: a browser asks again on each load.
    "cache-control": "no-cache",
}


class SecuredStatic:
    """ASGI: the static files, each answer with ``SECURITY_HEADERS``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_secured)


def dashboard_app() -> ASGIApp:
    """The pages, ``index.html`` for the folder itself."""
    return SecuredStatic(StaticFiles(directory=UI_DIR, html=True))

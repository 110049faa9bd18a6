"""How the controller's API listens: uvicorn's configuration from ``[api]``, TLS included."""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp

from medevac.config import ApiConfig


def server_config(app: ASGIApp, api: ApiConfig, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` on ``api.host``:``api.port``, over HTTPS when
    ``api.tls_cert_file`` and ``api.tls_key_file`` are set; ``options`` go to uvicorn."""
    if api.tls_cert_file is not None and api.tls_key_file is not None:
        options["ssl_certfile"] = str(api.tls_cert_file)
        options["ssl_keyfile"] = str(api.tls_key_file)
    return uvicorn.Config(app, host=api.host, port=api.port, **options)


def base_url(api: ApiConfig) -> str:
    """Where the API answers, as a URL."""
    scheme = "https" if api.tls_cert_file is not None else "http"
    host = f"[{api.host}]" if ":" in api.host else api.host
    return f"{scheme}://{host}:{api.port}"

"""The controller's HTTP API (FastAPI): auth, error envelope, routes."""

from medevac.api.app import create_app

__all__ = ["create_app"]

"""Typed errors of the cloud driver; messages carry the cloud's own words, never a token."""

from __future__ import annotations


class CloudError(Exception):
    """A cloud call failed. ``status`` is the HTTP status when there was one."""

    transient = False

    def __init__(self, message: str, *, status: int | None = None, operation: str = "") -> None:
        super().__init__(f"{operation}: {message}" if operation else message)
        self.status = status
        self.operation = operation
        self.cloud_message = message


class CloudUnavailable(CloudError):
    """The service did not answer, timed out, or answered 5xx/503: worth a retry."""

    transient = True


class InvalidRequest(CloudError):
    """400: the cloud refused the request as malformed or not allowed now."""


class ComputeServiceInUse(InvalidRequest):
    """Nova refused an evacuation because the source compute service still looks up."""


class Forbidden(CloudError):
    """401/403: the credentials lack the role this call needs."""


class NotFound(CloudError):
    """404: the server, service, port or host does not exist."""


class Conflict(CloudError):
    """409: the resource is in a state that forbids the call (e.g. already stopped)."""

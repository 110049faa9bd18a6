"""The only way medevac touches a cloud: openstacksdk, the cloud named in clouds.yaml."""

from medevac.cloud.driver import CloudDriver
from medevac.cloud.errors import (
    CloudError,
    CloudUnavailable,
    ComputeServiceInUse,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from medevac.cloud.models import ComputeService, DataPlaneStatus, Port, Server

__all__ = [
    "CloudDriver",
    "CloudError",
    "CloudUnavailable",
    "ComputeService",
    "ComputeServiceInUse",
    "Conflict",
    "DataPlaneStatus",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "Port",
    "Server",
]

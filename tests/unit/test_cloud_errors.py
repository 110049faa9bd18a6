"""The cloud driver turns Nova's and Neutron's error answers into typed exceptions."""

from __future__ import annotations

import pytest

from medevac.cloud import (
    CloudError,
    CloudUnavailable,
    ComputeServiceInUse,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Port,
    Server,
)
from medevac.cloud.driver import _raise_for, call_name


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"badRequest": {"code": 400, "message": "Compute service of host1 is still in use."}},
            ComputeServiceInUse,
        ),
        (400, {"badRequest": {"code": 400, "message": "Invalid input"}}, InvalidRequest),
        (403, {"forbidden": {"code": 403, "message": "Policy doesn't allow"}}, Forbidden),
        (
            404,
            {"itemNotFound": {"code": 404, "message": "Instance x could not be found."}},
            NotFound,
        ),
        (409, {"conflictingRequest": {"code": 409, "message": "in vm_state stopped"}}, Conflict),
        (503, "Service Unavailable", CloudUnavailable),
        (
            404,
            {
                "NeutronError": {
                    "type": "PortNotFound",
                    "message": "Port p could not be found.",
                    "detail": "",
                }
            },
            NotFound,
        ),
        (418, None, CloudError),
    ],
)
def test_error_mapping(status: int, body: object, expected: type[CloudError]) -> None:
    with pytest.raises(expected) as info:
        _raise_for(status, body, "evacuate server s1")
    assert type(info.value) is expected
    assert info.value.status == status
    assert str(info.value).startswith("evacuate server s1: ")


def test_compute_service_in_use_carries_novas_words() -> None:
    with pytest.raises(InvalidRequest) as info:  # it is also an InvalidRequest
        _raise_for(
            400,
            {"badRequest": {"code": 400, "message": "Compute service of host1 is still in use."}},
            "evacuate",
        )
    assert info.value.cloud_message == "Compute service of host1 is still in use."
    assert not info.value.transient


def test_transient_errors_are_marked() -> None:
    assert CloudUnavailable("x").transient
    assert not NotFound("x").transient


def test_server_and_port_views_parse_api_bodies() -> None:
    s = Server.from_api(
        {
            "id": "s1",
            "name": "vm",
            "tenant_id": "p1",
            "OS-EXT-SRV-ATTR:host": "host1",
            "status": "ACTIVE",
            "OS-EXT-STS:vm_state": "active",
            "OS-EXT-STS:task_state": None,
            "OS-EXT-STS:power_state": 1,
            "host_status": "UP",
            "metadata": {"HA_Enabled": "True"},
        }
    )
    assert (s.host, s.project_id, s.power_state_name) == ("host1", "p1", "running")
    p = Port.from_api(
        {"id": "p", "device_id": "s1", "binding:host_id": "", "data_plane_status": None}
    )
    assert p.host is None and p.data_plane_status is None


@pytest.mark.parametrize(
    ("service", "method", "url", "name"),
    [
        (
            "compute",
            "POST",
            "/servers/0b3f8a2e-1c4d-4e5f-9a6b-7c8d9e0f1a2b/action",
            "compute POST /servers/{id}/action",
        ),
        (
            "compute",
            "PUT",
            "/os-services/0b3f8a2e1c4d4e5f9a6b7c8d9e0f1a2b",
            "compute PUT /os-services/{id}",
        ),
        ("compute", "PUT", "/os-services/force-down", "compute PUT /os-services/force-down"),
        ("network", "GET", "/ports", "network GET /ports"),
        ("compute", "GET", "/servers/detail", "compute GET /servers/detail"),
    ],
)
def test_calls_are_counted_by_path_with_ids_elided(
    service: str, method: str, url: str, name: str
) -> None:
    assert call_name(service, method, url) == name

"""medevac's cloud driver against the lab's real Nova and Neutron."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from medevac.cloud import (
    CloudDriver,
    CloudError,
    CloudUnavailable,
    Conflict,
    DataPlaneStatus,
    NotFound,
)
from tests.conftest import wait_for
from tests.lab.conftest import RunningLab

HOST = "host5"


def test_lists_services_with_novas_view(lab: RunningLab) -> None:
    services = lab.run(lab.driver.list_compute_services())
    assert {s.host for s in services} == {f"host{i}" for i in range(1, 6)}
    svc = next(s for s in services if s.host == HOST)
    assert svc.binary == "nova-compute" and svc.status == "enabled"
    assert len(svc.id) == 36  # 2.53+: the service UUID
    assert svc.updated_at is not None and svc.updated_at.tzinfo is not None


def test_disable_with_reason_shows_maintenance(lab: RunningLab) -> None:
    svc = lab.run(lab.driver.set_enabled(HOST, False, "medevac: host under recovery"))
    assert svc.status == "disabled" and svc.disabled_reason == "medevac: host under recovery"
    servers = lab.run(lab.driver.list_host_servers(HOST))
    assert {s.host_status for s in servers} == {"MAINTENANCE"}
    assert lab.run(lab.driver.set_enabled(HOST, True)).status == "enabled"


def test_reset_state_and_stop_start(lab: RunningLab) -> None:
    server = lab.run(lab.driver.list_host_servers(HOST))[0]
    lab.run(lab.driver.reset_state(server.id, "error"))
    assert lab.run(lab.driver.get_server(server.id)).vm_state == "error"
    lab.run(lab.driver.reset_state(server.id, "active"))
    assert lab.run(lab.driver.get_server(server.id)).status == "ACTIVE"
    with pytest.raises(ValueError, match="reset-state takes"):
        lab.run(lab.driver.reset_state(server.id, "deleted"))
    lab.run(lab.driver.stop_server(server.id))
    wait_for("SHUTOFF", lambda: lab.run(lab.driver.get_server(server.id)).status == "SHUTOFF", 30)
    with pytest.raises(Conflict):
        lab.run(lab.driver.stop_server(server.id))  # already stopped: Nova's 409
    lab.run(lab.driver.start_server(server.id))
    wait_for("ACTIVE", lambda: lab.run(lab.driver.get_server(server.id)).status == "ACTIVE", 30)


def test_a_burst_as_wide_as_the_workers_keeps_its_connections(
    lab: RunningLab, caplog: pytest.LogCaptureFixture
) -> None:
    # The inspector's resets and port updates come as one burst, as wide as the
    # driver's worker threads: every connection must go back into the pool.
    server = lab.run(lab.driver.list_host_servers(HOST))[0]
    driver = CloudDriver(lab.info["cloud"], clouds_yaml=Path(lab.info["clouds_yaml"]))

    async def burst() -> None:
        try:
            for _ in range(3):
                await asyncio.gather(*(driver.get_server(server.id) for _ in range(16)))
        finally:
            await driver.close()

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        lab.run(burst())
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_ports_of_a_host_and_their_data_plane_status(lab: RunningLab) -> None:
    ports = lab.run(lab.driver.list_host_ports(HOST))
    servers = lab.run(lab.driver.list_host_servers(HOST))
    assert {p.device_id for p in ports} == {s.id for s in servers}
    assert all(p.host == HOST for p in ports)
    port = ports[0]
    assert (
        lab.run(lab.driver.set_data_plane_status(port.id, DataPlaneStatus.DOWN)).data_plane_status
        is DataPlaneStatus.DOWN
    )
    assert lab.run(lab.driver.get_port(port.id)).data_plane_status is DataPlaneStatus.DOWN
    restored = lab.run(lab.driver.set_data_plane_status(port.id, DataPlaneStatus.ACTIVE))
    assert restored.data_plane_status is DataPlaneStatus.ACTIVE
    assert lab.run(lab.driver.list_host_ports("no-such-host")) == []


def test_unknown_things_are_not_found(lab: RunningLab) -> None:
    with pytest.raises(NotFound):
        lab.run(lab.driver.get_server("00000000-0000-0000-0000-000000000000"))
    with pytest.raises(NotFound, match="no nova-compute service"):
        lab.run(lab.driver.set_forced_down("no-such-host", True))
    with pytest.raises(NotFound):
        lab.run(lab.driver.get_port("00000000-0000-0000-0000-000000000000"))


def test_force_down_in_the_2_11_form_on_an_older_cloud(lab: RunningLab) -> None:
    old = CloudDriver(
        lab.info["cloud"],
        clouds_yaml=Path(lab.info["clouds_yaml"]),
        compute_microversion_cap=(2, 52),
    )
    try:
        assert lab.run(old.compute_max_microversion()) == (2, 52)
        svc = lab.run(old.set_forced_down(HOST, True))
        assert svc.forced_down and svc.state == "down"
        assert not svc.id.count("-")  # before 2.53 the service id is an integer
        svc = lab.run(old.set_forced_down(HOST, False))
        assert not svc.forced_down
        disabled = lab.run(old.set_enabled(HOST, False, "old-style disable"))
        assert disabled.status == "disabled" and disabled.disabled_reason == "old-style disable"
        assert lab.run(old.set_enabled(HOST, True)).status == "enabled"
    finally:
        lab.run(old.close())
    assert lab.run(lab.driver.get_compute_service(HOST)).state == "up"


def test_unreachable_cloud_is_a_transient_error(tmp_path: Path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  dead:\n    auth_type: none\n"
        "    compute_endpoint_override: http://127.0.0.1:9/v2.1\n"
    )
    driver = CloudDriver("dead", clouds_yaml=clouds, call_timeout=10)
    import asyncio

    with pytest.raises(CloudUnavailable):
        asyncio.run(driver.list_compute_services())
    with pytest.raises(CloudError, match="cannot load cloud 'absent'"):
        asyncio.run(CloudDriver("absent", clouds_yaml=clouds).list_compute_services())

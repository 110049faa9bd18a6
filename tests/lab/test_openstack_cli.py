"""The real `openstack` CLI and Debian's `ipmitool` work against the lab unchanged."""

from __future__ import annotations

from tests.conftest import wait_for
from tests.lab.conftest import RunningLab, as_json, ok, openstack

TENANT_A = "medevac-lab-tenant-a"
HOST_STATUS_MV = ("--os-compute-api-version", "2.16")


def test_openstack_cli_sees_and_changes_what_medevac_changes(lab: RunningLab) -> None:
    host = "host4"
    mv = ["--os-compute-api-version", "2.53"]
    services = as_json(lab, *mv, "compute", "service", "list")
    assert {s["Host"] for s in services if s["Binary"] == "nova-compute"} >= {host}
    servers = as_json(lab, "server", "list", "--all-projects", "--host", host)
    assert servers, "no servers on host4"
    target = servers[0]["ID"]
    lab.client.inject("host-crash", host)  # forcing a live host down would be split brain
    ok(openstack(lab, *mv, "compute", "service", "set", "--down", host, "nova-compute"))
    try:
        assert as_json(lab, *HOST_STATUS_MV, "server", "show", target)["host_status"] == "DOWN"
        ok(openstack(lab, "--os-compute-api-version", "2.29", "server", "evacuate", target))

        def moved() -> bool:
            s = as_json(lab, "server", "show", target)
            return s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] != host

        wait_for("the evacuated server to be ACTIVE elsewhere", moved, 60, 0.5)
    finally:
        # Nova keeps the service forced down while evacuations from it are not cleaned
        # up; the host's own compute does that when it comes back.
        lab.client.heal("host-crash", host)
        ok(openstack(lab, *mv, "compute", "service", "set", "--up", host, "nova-compute"))
    lab.no_server_runs_twice()
    port_id = as_json(lab, "port", "list", "--device-id", target)[0]["ID"]
    ok(openstack(lab, "port", "set", "--data-plane-status", "DOWN", port_id))
    assert as_json(lab, "port", "show", port_id)["data_plane_status"] == "DOWN"
    # Neutron 29 answers 500 to `port unset --data-plane-status` (null is refused by its
    # object layer), so the way back is ACTIVE, as medevac does on real clouds.
    ok(openstack(lab, "port", "set", "--data-plane-status", "ACTIVE", port_id))
    assert as_json(lab, "port", "show", port_id)["data_plane_status"] == "ACTIVE"


def test_tenant_sees_host_status_of_its_own_servers_only(lab: RunningLab) -> None:
    mine = as_json(lab, *HOST_STATUS_MV, "server", "list", "--long", cloud=TENANT_A)
    everyone = lab.status()["servers"]
    own_ids = {s["id"] for s in everyone if s["project_id"] == "tenant-a"}
    assert {s["ID"] for s in mine} == own_ids
    shown = as_json(lab, *HOST_STATUS_MV, "server", "show", mine[0]["ID"], cloud=TENANT_A)
    assert shown["host_status"] in ("UP", "DOWN", "UNKNOWN", "MAINTENANCE")
    other = next(s["id"] for s in everyone if s["project_id"] == "tenant-b")
    refused = openstack(lab, "server", "show", other, cloud=TENANT_A)
    assert refused.returncode != 0


def test_ipmitool_drives_a_lab_bmc(lab: RunningLab) -> None:
    host = "host4"
    assert "Chassis Power is on" in ok(lab.ipmitool(host, "power", "status"))
    ok(lab.ipmitool(host, "power", "off"))
    wait_for("host4 power off", lambda: lab.host(host)["bmc"]["power"] == "off", 10)
    assert "Chassis Power is off" in ok(lab.ipmitool(host, "power", "status"))
    ok(lab.ipmitool(host, "power", "on"))
    wait_for("host4 power on", lambda: lab.host(host)["bmc"]["power"] == "on", 10)
    wrong = lab.ipmitool(host, "power", "status", password="not-the-password")
    assert wrong.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in wrong.stderr

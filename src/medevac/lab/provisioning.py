"""What a new lab creates through Nova's and Neutron's APIs: one flat network per
physnet, and its servers, each with a port bound on its host."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from medevac.lab.layout import PHYSNETS, PROJECTS, LabError
from medevac.lab.openstack_services import OpenStackServices

log = logging.getLogger("medevac.lab")

BOOT_BATCH = 5  # servers in flight at once; Nova's fixtures serialise writes anyway
BOOT_ATTEMPTS = 3


def create_networks(services: OpenStackServices) -> dict[str, str]:
    """One shared flat network per physnet; returns their ids by physnet."""
    networks = {}
    for physnet in PHYSNETS:
        body = services.neutron_req(
            "POST",
            "/networks",
            {
                "network": {
                    "name": f"data-{physnet}",
                    "shared": True,
                    "provider:network_type": "flat",
                    "provider:physical_network": physnet,
                }
            },
        )
        networks[physnet] = body["network"]["id"]
    return networks


def server_plan(
    host_names: list[str], counts: list[int], projects: Sequence[str] = PROJECTS
) -> list[dict[str, Any]]:
    """The lab's servers: a mix of projects and HA policies, spread over hosts
    (``counts[i]`` servers on ``host_names[i]``); ``projects``: the tenant projects'
    ids (their names, unless Keystone gave them ids)."""
    plan = []
    n = -1
    for host, count in zip(host_names, counts, strict=True):
        for s in range(count):
            n += 1
            ha = n % 3 != 2  # one server in three opts out of HA
            plan.append(
                {
                    "name": f"vm-{host}-{s + 1}",
                    "host": host,
                    "project": projects[n % len(projects)],
                    "physnet": PHYSNETS[n % len(PHYSNETS)],
                    "metadata": {"HA_Enabled": "True" if ha else "False"},
                }
            )
    return plan


def boot_servers(
    services: OpenStackServices, plan: list[dict[str, Any]], networks: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Boot the plan's servers on their hosts, each with a port on its physnet's
    network; returns them by id (the plan's item and its port's id)."""
    servers: dict[str, dict[str, Any]] = {}
    for start in range(0, len(plan), BOOT_BATCH):
        batch = plan[start : start + BOOT_BATCH]
        ids = [_create_server(services, item) for item in batch]
        for i, item in enumerate(batch):
            server_id = _boot_settled(services, ids[i], item)
            port = services.neutron_req(
                "POST",
                "/ports",
                {
                    "port": {
                        "name": f"{item['name']}-port",
                        "network_id": networks[item["physnet"]],
                        "device_id": server_id,
                        "device_owner": "compute:nova",
                        "binding:host_id": item["host"],
                        "project_id": item["project"],
                    }
                },
            )["port"]
            servers[server_id] = {**item, "port": port["id"]}
    return servers


def _create_server(services: OpenStackServices, item: dict[str, Any]) -> str:
    body = services.nova_req(
        "POST",
        "/servers",
        json_body={
            "server": {
                "name": item["name"],
                "imageRef": services.nova["image_id"],
                "flavorRef": services.nova["flavor_id"],
                "networks": "none",
                "host": item["host"],
                "metadata": item["metadata"],
            }
        },
        project=item["project"],
    )
    return str(body["server"]["id"])


def _boot_settled(services: OpenStackServices, server_id: str, item: dict[str, Any]) -> str:
    """Wait for a boot; on a busy machine Nova's heartbeat round (one service at a
    time) can run late enough that the scheduler thinks the target host is down
    ("No valid host"): wait for the host's service, then boot it again."""
    attempt = 1
    while True:
        try:
            _wait_active(services, server_id)
            return server_id
        except LabError as exc:
            if "No valid host" not in str(exc) or attempt >= BOOT_ATTEMPTS:
                raise
        attempt += 1
        log.warning("boot of %s found no valid host; booting it again", item["name"])
        services.nova_req("DELETE", f"/servers/{server_id}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = services.nova_req(
                "GET", f"/os-services?binary=nova-compute&host={item['host']}", mv="2.53"
            )["services"]
            if found and found[0]["state"] == "up":
                break
            time.sleep(0.5)
        server_id = _create_server(services, item)


def _wait_active(services: OpenStackServices, server_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = services.nova_req("GET", f"/servers/{server_id}")["server"]
        if server["status"] == "ACTIVE":
            return
        if server["status"] == "ERROR":
            raise LabError(f"server {server_id} went to ERROR while booting: {server}")
        time.sleep(0.05)
    raise LabError(f"server {server_id} not ACTIVE within {timeout:.0f} s")

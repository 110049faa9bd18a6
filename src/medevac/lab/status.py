"""What a running lab looks like: Nova's, Neutron's and the fault model's views of
its hosts, servers and ports, and where each server's domain runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medevac.lab.layout import PHYSNETS

if TYPE_CHECKING:
    from medevac.lab.supervisor import Lab


def running(lab: Lab) -> dict[str, list[str]]:
    """For every server, the hosts whose hypervisor runs its domain right now."""
    domains: dict[str, list[str]] = lab.services.control("GET", "/domains")
    out: dict[str, list[str]] = {sid: [] for sid in lab.faults.servers}
    for host, ids in domains.items():
        for sid in ids:
            out.setdefault(sid, []).append(host)
    return out


def status(lab: Lab) -> dict[str, Any]:
    services = lab.services
    compute_services = services.nova_req("GET", "/os-services?binary=nova-compute", mv="2.53")
    by_host = {s["host"]: s for s in compute_services["services"]}
    servers = services.nova_req("GET", "/servers/detail?all_tenants=1", mv="2.74")["servers"]
    ports = services.neutron_req("GET", "/ports")["ports"]
    networks = {
        n["id"]: n.get("provider:physical_network")
        for n in services.neutron_req("GET", "/networks")["networks"]
    }
    computes = services.control("GET", "/hosts")["hosts"]
    hosts = []
    for name, faults in lab.faults.hosts.items():
        svc = by_host.get(name, {})
        bmc = lab.bmcs.specs.get(name)
        hosts.append(
            {
                "name": name,
                "nova": {
                    "state": svc.get("state"),
                    "status": svc.get("status"),
                    "forced_down": svc.get("forced_down"),
                    "updated_at": svc.get("updated_at"),
                },
                "bmc": {
                    "address": "127.0.0.1" if bmc else None,
                    "port": bmc.port if bmc else None,
                    "power": "on" if faults.power_on else "off",
                    "reachable": not faults.bmc_unreachable,
                    "protocol": lab.bmcs.protocol(name),
                },
                "compute_process": ("running" if computes[name]["compute_running"] else "stopped"),
                "faults": faults.active(),
                "links": {p: p not in faults.links_down for p in PHYSNETS},
            }
        )
    return {
        "hosts": hosts,
        "servers": [
            {
                "id": s["id"],
                "name": s["name"],
                "project_id": s["tenant_id"],
                "host": s.get("OS-EXT-SRV-ATTR:host"),
                "status": s["status"],
                "vm_state": s.get("OS-EXT-STS:vm_state"),
                "task_state": s.get("OS-EXT-STS:task_state"),
                "power_state": s.get("OS-EXT-STS:power_state"),
                "host_status": s.get("host_status"),
                "metadata": s.get("metadata", {}),
            }
            for s in servers
        ],
        "ports": [
            {
                "id": p["id"],
                "device_id": p["device_id"],
                "host": p.get("binding:host_id"),
                "physnet": networks.get(p["network_id"]),
                "data_plane_status": p.get("data_plane_status"),
            }
            for p in ports
        ],
    }

"""The files a lab writes for its users: a clouds.yaml for `openstack` and
openstacksdk, and the configuration `medevac serve` runs with against the lab."""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medevac.lab.bmc_emulator import BmcSpec
from medevac.lab.identity import SERVICE_USER, KeystoneSetup
from medevac.lab.layout import PROJECTS, LabPaths, write_text_atomic
from medevac.lab.ports import free_port

CLOUD_NAME = "medevac-lab"


def _token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class ControllerAccess:
    """The controller's side of a lab, chosen when the lab starts: the ports it
    listens on, its API tokens, and the key its agents sign heartbeats with."""

    controller_port: int = field(default_factory=free_port)
    heartbeat_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    admin_token: str = field(default_factory=_token)
    reader_token: str = field(default_factory=_token)
    project_tokens: dict[str, str] = field(default_factory=lambda: {p: _token() for p in PROJECTS})
    agent_key: bytes = field(default_factory=lambda: secrets.token_hex(32).encode())
    # Several controllers: the API and heartbeat ports of the second, third, ...
    more_ports: tuple[tuple[int, int], ...] = ()

    @classmethod
    def for_controllers(cls, n: int) -> ControllerAccess:
        """The access of ``n`` controllers: the same tokens and key, ports of their own."""
        return cls(
            more_ports=tuple(
                (free_port(), free_port(socket.SOCK_DGRAM)) for _ in range(max(0, n - 1))
            )
        )

    @property
    def ports(self) -> list[tuple[int, int]]:
        """(API port, heartbeat port) of each controller, the first first."""
        return [(self.controller_port, self.heartbeat_port), *self.more_ports]


@dataclass(frozen=True)
class ClusterSetup:
    """What several lab controllers share: their PostgreSQL store and their group."""

    storage_url: str
    group: str
    coordination_url: str = "redis://127.0.0.1:6379"
    membership_timeout: float = 2.0


def member_id(index: int) -> str:
    """The lab's name for its ``index``-th controller (from 1)."""
    return f"ctl-{index}"


def write_clouds_yaml(
    paths: LabPaths,
    control_port: int,
    nova_url: str,
    neutron_url: str,
    keystone: KeystoneSetup | None = None,
) -> None:
    """The lab's cloud as an admin sees it, and one cloud per tenant project; with
    ``keystone``, each signs in to it with a password, and there is one more per user."""
    if keystone is not None:
        write_text_atomic(
            paths.clouds_yaml,
            yaml.safe_dump(
                {"clouds": _keystone_clouds(control_port, nova_url, neutron_url, keystone)}
            ),
            mode=0o600,
        )
        return
    identity = f"http://127.0.0.1:{control_port}/identity/v3"
    base = {
        "auth_type": "none",
        "identity_endpoint_override": identity,
        "image_endpoint_override": f"http://127.0.0.1:{control_port}/image",
        "compute_endpoint_override": nova_url,
        "network_endpoint_override": neutron_url,
    }
    clouds: dict[str, Any] = {CLOUD_NAME: base}
    for project in PROJECTS:
        # A tenant's view: the lab's services map this token to a member of the project.
        clouds[f"{CLOUD_NAME}-{project}"] = {
            "auth_type": "admin_token",
            "auth": {"token": f"lab-project-{project}", "endpoint": nova_url},
            "identity_endpoint_override": identity,
            "image_endpoint_override": f"http://127.0.0.1:{control_port}/image",
            "compute_endpoint_override": nova_url,
            "network_endpoint_override": neutron_url,
        }
    write_text_atomic(paths.clouds_yaml, yaml.safe_dump({"clouds": clouds}))


def _keystone_clouds(
    control_port: int, nova_url: str, neutron_url: str, keystone: KeystoneSetup
) -> dict[str, Any]:
    def password(user: str) -> dict[str, Any]:
        u = keystone.user(user)
        return {
            "auth_type": "password",
            "auth": {
                "auth_url": keystone.auth_url,
                "username": u.name,
                "password": u.password,
                "project_name": u.project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "interface": "public",
            # The lab has no Glance: the control API's read-only one.
            "image_endpoint_override": f"http://127.0.0.1:{control_port}/image",
        }

    # medevac's own entry keeps its endpoints pinned; the others find theirs in the catalog.
    clouds: dict[str, Any] = {
        CLOUD_NAME: {
            **password("admin"),
            "compute_endpoint_override": nova_url,
            "network_endpoint_override": neutron_url,
        }
    }
    for project in PROJECTS:
        clouds[f"{CLOUD_NAME}-{project}"] = password(f"member-{project}")
    for u in keystone.users:
        clouds[f"{CLOUD_NAME}-user-{u.name}"] = password(u.name)
    return clouds


def write_controller_config(
    paths: LabPaths,
    access: ControllerAccess,
    bmcs: dict[str, BmcSpec],
    redfish_hosts: set[str],
    notifications_url: str | None,
    cluster: ClusterSetup | None = None,
    keystone: KeystoneSetup | None = None,
) -> list[Path]:
    """The controller's configuration, its agent key and its BMC secrets file; with
    ``cluster``, one configuration per controller of ``access.ports``, each with its own
    ports and member id, all on the shared store and group. Returns the configurations."""
    write_text_atomic(paths.agent_key, access.agent_key.decode() + "\n", mode=0o600)
    secrets_toml = "".join(
        f'[{h}]\nusername = "{b.username}"\npassword = "{b.password}"\n\n' for h, b in bmcs.items()
    )
    write_text_atomic(paths.bmc_secrets, secrets_toml, mode=0o600)
    if cluster is None:
        body = _controller_toml(
            paths, access, bmcs, redfish_hosts, notifications_url, access.ports[0], None, None
        )
        body += _keystone_toml(keystone)
        write_text_atomic(paths.controller_config, body, mode=0o600)
        return [paths.controller_config]
    written = []
    for index, ports in enumerate(access.ports, start=1):
        body = _controller_toml(
            paths, access, bmcs, redfish_hosts, notifications_url, ports, cluster, index
        )
        body += _keystone_toml(keystone)
        path = paths.controller_config_of(index)
        write_text_atomic(path, body, mode=0o600)
        written.append(path)
    return written


def _keystone_toml(keystone: KeystoneSetup | None) -> str:
    if keystone is None:
        return ""
    service = keystone.user(SERVICE_USER)
    return "\n".join(
        [
            "",
            "# Keystone tokens too, validated as medevac's service user.",
            "[keystone]",
            "auth_url = " + json.dumps(keystone.auth_url),
            "username = " + json.dumps(service.name),
            "password = " + json.dumps(service.password),
            "project_name = " + json.dumps(service.project),
            "",
        ]
    )


def _controller_toml(
    paths: LabPaths,
    access: ControllerAccess,
    bmcs: dict[str, BmcSpec],
    redfish_hosts: set[str],
    notifications_url: str | None,
    ports: tuple[int, int],
    cluster: ClusterSetup | None,
    index: int | None,
) -> str:
    api_port, heartbeat_port = ports
    storage = f"sqlite:///{paths.controller_db}" if cluster is None else cluster.storage_url
    lines = [
        "# Written by `medevac lab up` for this lab; `medevac serve` runs against it.",
        "bmc_secrets_file = " + json.dumps(str(paths.bmc_secrets)),
        "agent_key_file = " + json.dumps(str(paths.agent_key)),
        "",
        "[api]",
        'host = "127.0.0.1"',
        f"port = {api_port}",
        "rate_limit = 0  # the benchmarks and tests call as fast as they can",
        "",
        "[cloud]",
        f'name = "{CLOUD_NAME}"',
        "clouds_yaml = " + json.dumps(str(paths.clouds_yaml)),
        "",
        "[monitor]",
        'listen_host = "127.0.0.1"',
        f"listen_port = {heartbeat_port}",
        *([f'nova_notifications_url = "{notifications_url}"'] if notifications_url else []),
        "",
        "[storage]",
        "url = " + json.dumps(storage),
        "",
        "[notifier]",
        "# The lab's consumers listen on loopback.",
        'action_allow_networks = ["127.0.0.0/8"]',
        "",
        "[[api.tokens]]",
        'name = "lab-admin"',
        f'token = "{access.admin_token}"',
        'role = "admin"',
        "",
        "[[api.tokens]]",
        'name = "lab-reader"',
        f'token = "{access.reader_token}"',
        'role = "reader"',
        "",
    ]
    for project, token in access.project_tokens.items():
        lines += [
            "[[api.tokens]]",
            f'name = "lab-{project}"',
            f'token = "{token}"',
            'role = "member"',
            f'project_id = "{project}"',
            "",
        ]
    for host, bmc in bmcs.items():
        lines += [f"[hosts.{host}]", 'bmc_address = "127.0.0.1"', f"bmc_port = {bmc.port}"]
        if host in redfish_hosts:
            lines += ['bmc_driver = "redfish"', 'redfish_scheme = "http"']
        lines.append("")
    if cluster is not None and index is not None:
        lines += [
            "[cluster]",
            "coordination_url = " + json.dumps(cluster.coordination_url),
            f'member_id = "{member_id(index)}"',
            "group = " + json.dumps(cluster.group),
            f"membership_timeout = {cluster.membership_timeout}",
            "# Controllers ask each other whether a host is silent with the reader token.",
            f'peer_token = "{access.reader_token}"',
            "",
        ]
    return "\n".join(lines)

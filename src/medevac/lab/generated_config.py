"""The files a lab writes for its users: a clouds.yaml for `openstack` and
openstacksdk, and the configuration `medevac serve` runs with against the lab."""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

import yaml

from medevac.lab.bmc_emulator import BmcSpec
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


def write_clouds_yaml(paths: LabPaths, control_port: int, nova_url: str, neutron_url: str) -> None:
    """The lab's cloud as an admin sees it, and one cloud per tenant project."""
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


def write_controller_config(
    paths: LabPaths,
    access: ControllerAccess,
    bmcs: dict[str, BmcSpec],
    redfish_hosts: set[str],
    notifications_url: str | None,
) -> None:
    """The controller's configuration, its agent key and its BMC secrets file."""
    write_text_atomic(paths.agent_key, access.agent_key.decode() + "\n", mode=0o600)
    secrets_toml = "".join(
        f'[{h}]\nusername = "{b.username}"\npassword = "{b.password}"\n\n' for h, b in bmcs.items()
    )
    write_text_atomic(paths.bmc_secrets, secrets_toml, mode=0o600)
    lines = [
        "# Written by `medevac lab up` for this lab; `medevac serve` runs against it.",
        "bmc_secrets_file = " + json.dumps(str(paths.bmc_secrets)),
        "agent_key_file = " + json.dumps(str(paths.agent_key)),
        "",
        "[api]",
        'host = "127.0.0.1"',
        f"port = {access.controller_port}",
        "rate_limit = 0  # the benchmarks and tests call as fast as they can",
        "",
        "[cloud]",
        f'name = "{CLOUD_NAME}"',
        "clouds_yaml = " + json.dumps(str(paths.clouds_yaml)),
        "",
        "[monitor]",
        'listen_host = "127.0.0.1"',
        f"listen_port = {access.heartbeat_port}",
        *([f'nova_notifications_url = "{notifications_url}"'] if notifications_url else []),
        "",
        "[storage]",
        "url = " + json.dumps(f"sqlite:///{paths.controller_db}"),
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
    write_text_atomic(paths.controller_config, "\n".join(lines), mode=0o600)

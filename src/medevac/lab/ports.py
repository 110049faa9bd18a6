"""Free TCP and UDP ports on loopback for the lab's listeners and its controller."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from medevac.lab.layout import LabError


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free now (TCP by default), below the kernel's
    ephemeral range: a port chosen here may stay unbound for a long time (the
    controller's, until `medevac serve` starts), and any socket bound to port 0 (an
    agent, a BMC, another lab's service) could otherwise be given it meanwhile."""
    top = _ephemeral_floor()
    for _ in range(200):
        port = secrets.randbelow(top - 20000) + 20000
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LabError("no free port on 127.0.0.1 below the ephemeral range")

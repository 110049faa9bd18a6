"""Local checks the agent reports with each heartbeat."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from medevac.monitor.protocol import Checks

RESCAN_INTERVAL = 1.0  # s between scans of /proc while nova-compute is not found


class LocalProbes(Protocol):
    def checks(self) -> Checks:
        """What the host looks like right now; called once per heartbeat, must be fast."""
        ...


class HostProbes:
    """Probes of a real compute host: /proc for nova-compute, sysfs for link state.

    Link state comes from ``/sys/class/net/IF/operstate`` (the kernel's view, the same
    one netlink reports). libvirt domain events are not watched yet.
    """

    def __init__(
        self,
        process_name: str = "nova-compute",
        interfaces: Mapping[str, str] | None = None,
        proc: Path = Path("/proc"),
        sysfs_net: Path = Path("/sys/class/net"),
    ) -> None:
        self.process_name = process_name
        self.interfaces = dict(interfaces or {})  # physnet -> interface
        self._proc = proc
        self._net = sysfs_net
        self._pid: int | None = None
        self._next_scan = 0.0  # monotonic: when /proc may be scanned again

    def _process_alive(self) -> bool:
        # Re-check the pid we found last time first: one stat per heartbeat.
        if self._pid is not None and self._cmdline_matches(self._pid):
            return True
        self._pid = None
        # Not running: a scan of every process reads thousands of files, and done at
        # every heartbeat it would delay the heartbeats themselves. Once a second
        # tells soon enough that it started.
        now = time.monotonic()
        if now < self._next_scan:
            return False
        self._next_scan = now + RESCAN_INTERVAL
        for entry in os.scandir(self._proc):
            if entry.name.isdigit() and self._cmdline_matches(int(entry.name)):
                self._pid = int(entry.name)
                return True
        return False

    def _cmdline_matches(self, pid: int) -> bool:
        try:
            raw = (self._proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return False
        return self.process_name.encode() in raw

    def _link_up(self, interface: str) -> bool:
        try:
            return (self._net / interface / "operstate").read_text().strip() in ("up", "unknown")
        except OSError:
            return False

    def checks(self) -> Checks:
        down = tuple(
            p for p, ifname in sorted(self.interfaces.items()) if not self._link_up(ifname)
        )
        return Checks(compute_alive=self._process_alive(), links_down=down)

"""Faults of the lab's controllers (a lab of several): kill, pause or cut off (its own
cgroup and iptables rules, medevac.lab.partition) a `medevac serve`.

The lab does not start its controllers (the user, the demo or a test does, each as
`MEDEVAC_CONFIG=<its configuration> medevac serve` or `medevac serve --config ...`),
so a controller is found by its configuration: the process whose environment or
command line names it. The target is a member id (``ctl-2``) or a host, meaning the
controller that owns the host now, as its ``/v1/cluster`` says.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from medevac.lab.faults import FaultError, FaultKind
from medevac.lab.partition import CutPorts, Partition


def serve_pids(config: str) -> list[int]:
    """The `medevac serve` processes running on ``config``."""
    env_needle = f"MEDEVAC_CONFIG={config}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"serve" not in cmdline:
                continue
            named = config.encode() in cmdline
            if named or env_needle in (proc / "environ").read_bytes() + b"\0":
                found.append(int(proc.name))
    return found


BACKEND_PORTS = {"redis": 6379, "etcd3": 2379, "etcd3+http": 2379, "etcd3+https": 2379}


def cut_ports(controllers: list[dict[str, Any]], member: str) -> CutPorts:
    """What cutting ``member`` off drops, from the configurations `lab up` wrote: its
    API and heartbeat ports, its coordination backend's port, its peers' API ports."""
    me = next(c for c in controllers if c["member_id"] == member)
    config = tomllib.loads(Path(me["config"]).read_text())
    backend = urlsplit(str(config["cluster"]["coordination_url"]))
    port = backend.port or BACKEND_PORTS.get(backend.scheme)
    if port is None:
        raise FaultError(409, f"{member}: no port in its coordination URL {backend.scheme}://...")
    peers = tuple(
        int(urlsplit(c["url"]).port or 80) for c in controllers if c["member_id"] != member
    )
    return CutPorts(
        api=int(config["api"]["port"]),
        heartbeat=int(config["monitor"]["listen_port"]),
        coordination=port,
        peers=peers,
    )


class ControllerFaults:
    """Kills, pauses and cuts off the lab's controllers (``controllers``: what `lab up`
    wrote of each: member_id, url, config; ``tag``: the comment on the lab's rules)."""

    def __init__(
        self, controllers: list[dict[str, Any]], admin_token: str, tag: str = "medevac-lab"
    ) -> None:
        self.controllers = controllers
        self.admin = {"X-Auth-Token": admin_token}
        self.tag = tag
        self.paused: dict[str, int] = {}  # member id -> pid stopped
        self.partitioned: dict[str, Partition] = {}  # member id -> its cut

    def _cluster(self, ctl: dict[str, Any]) -> dict[str, Any] | None:
        try:
            r = httpx.get(ctl["url"] + "/v1/cluster", headers=self.admin, timeout=2)
        except httpx.HTTPError:
            return None
        return dict(r.json()) if r.status_code == 200 else None

    def resolve(self, target: str) -> dict[str, Any]:
        """The controller named, or the one that owns the host named."""
        if len(self.controllers) < 2:
            raise FaultError(400, "controller faults need a lab of several (lab up --controllers)")
        for ctl in self.controllers:
            if ctl["member_id"] == target:
                return ctl
        owners = []
        for ctl in self.controllers:
            if ctl["member_id"] in self.paused or ctl["member_id"] in self.partitioned:
                continue  # it answers nothing (and owns nothing soon)
            view = self._cluster(ctl)
            if view is not None and target in view.get("hosts", {}):
                owners.append((view["hosts"][target], ctl))
        if not owners:
            names = ", ".join(c["member_id"] for c in self.controllers)
            raise FaultError(
                404, f"no running controller owns {target!r} (controllers: {names}, or a host)"
            )
        return max(owners, key=lambda o: o[0])[1]  # the latest claim, should two say so

    def apply(self, kind: FaultKind, target: str, inject: bool) -> dict[str, Any]:
        """Kill or pause (``inject``) or wake (heal of a pause) a controller; what was
        done to whom (member id and pid)."""
        if kind is FaultKind.CONTROLLER_KILL:
            if not inject:
                raise FaultError(
                    400, "a killed controller is started again with `medevac serve`, not healed"
                )
            ctl = self.resolve(target)
            pid = self._pid(ctl)
            os.kill(pid, signal.SIGKILL)
            return {"member_id": ctl["member_id"], "pid": pid}
        if kind is FaultKind.CONTROLLER_PARTITION:
            return self._partition(target, inject)
        if inject:
            ctl = self.resolve(target)
            if ctl["member_id"] in self.paused:
                raise FaultError(409, f"{ctl['member_id']} is already paused")
            pid = self._pid(ctl)
            os.kill(pid, signal.SIGSTOP)
            self.paused[ctl["member_id"]] = pid
            return {"member_id": ctl["member_id"], "pid": pid}
        # Heal a pause: by member id, or the host the paused controller owned.
        member = target if target in self.paused else None
        if member is None and len(self.paused) == 1:
            member = next(iter(self.paused))
        if member is None:
            raise FaultError(409, f"no controller paused as {target!r} (paused: {self.paused})")
        pid = self.paused.pop(member)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        return {"member_id": member, "pid": pid}

    def _partition(self, target: str, inject: bool) -> dict[str, Any]:
        if inject:
            ctl = self.resolve(target)
            member = str(ctl["member_id"])
            if member in self.partitioned:
                raise FaultError(409, f"{member} is already cut off")
            pid = self._pid(ctl)
            cut = Partition.cut(self.tag, member, pid, cut_ports(self.controllers, member))
            self.partitioned[member] = cut
            return {"member_id": member, "pid": pid, "rules": len(cut.rules)}
        found = target if target in self.partitioned else None
        if found is None and len(self.partitioned) == 1:
            found = next(iter(self.partitioned))
        if found is None:
            raise FaultError(
                409, f"no controller cut off as {target!r} (cut off: {sorted(self.partitioned)})"
            )
        cut = self.partitioned.pop(found)
        cut.heal()
        return {"member_id": found, "pid": cut.pid, "rules": 0}

    def _pid(self, ctl: dict[str, Any]) -> int:
        pids = serve_pids(str(ctl["config"]))
        if len(pids) != 1:
            found = "none" if not pids else f"{len(pids)}: {pids}"
            raise FaultError(
                409, f"{ctl['member_id']}: not one `medevac serve` on {ctl['config']} ({found})"
            )
        return pids[0]

    def resume_all(self) -> None:
        """At the lab's stop: no controller is left stopped or cut off."""
        for pid in self.paused.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused.clear()
        for cut in self.partitioned.values():
            with contextlib.suppress(OSError):
                cut.heal()
        self.partitioned.clear()

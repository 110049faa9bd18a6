"""Injecting and healing faults in a running lab.

The fault model (medevac.lab.faults) changes at once; then Nova's compute service
and the fake hypervisor's domains on each host are reconciled to what the model
implies, the way a controller reconciles desired state. The BMCs' power control
and the agents' local checks go through here too: both act on, or read, the model.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from medevac.lab.bmcs import LabBmcs
from medevac.lab.controller_faults import ControllerFaults
from medevac.lab.faults import FaultError, FaultKind, HostFaults
from medevac.lab.layout import PHYSNETS, LabPaths
from medevac.lab.openstack_services import OpenStackServices
from medevac.monitor.protocol import Checks

log = logging.getLogger("medevac.lab")


def wall_clock() -> tuple[float, str]:
    """Now, as epoch seconds and as ISO 8601 (UTC)."""
    t = time.time()
    return t, datetime.fromtimestamp(t, UTC).isoformat()


class FaultInjector:
    """The lab's fault model, and what keeps the cloud in step with it."""

    def __init__(
        self,
        paths: LabPaths,
        host_names: list[str],
        services: OpenStackServices,
        bmcs: LabBmcs,
        on_change: Callable[[], None],
    ) -> None:
        self.paths = paths
        self.services = services
        self.bmcs = bmcs
        self._on_change = on_change  # a host's OS or reachability may have changed
        self.hosts = {h: HostFaults(h, PHYSNETS) for h in host_names}
        self.servers: dict[str, dict[str, Any]] = {}  # id -> {host, name, project, port}
        self.crashed_servers: set[str] = set()
        # The fault model is touched from API threads and the BMC thread: model_lock is
        # held only briefly; reconcile_lock orders the (slow) calls into Nova.
        self.model_lock = threading.Lock()
        self.reconcile_lock = threading.Lock()
        self._booted = dict.fromkeys(host_names, 0)
        self._reconciler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        # A lab of several controllers: their kills and pauses (set by the supervisor).
        self.controllers: ControllerFaults | None = None
        self._controller_lock = threading.Lock()

    def apply_fault(
        self,
        kind: FaultKind,
        target: str,
        inject: bool,
        physnet: str | None = None,
        *,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Inject or heal one fault; returns the record with its wall-clock time (T00).

        ``target`` may list several hosts (``host1,host2``): the fault strikes them all
        at the same instant (one record), as when the controller itself is cut off.
        With ``wait`` the cloud reflects the fault when this returns; without it (BMC
        power control, which must answer at once) Nova catches up in the background.
        """
        action = "inject" if inject else "heal"
        if kind.targets_controller:
            return self._apply_controller_fault(kind, target, inject)
        if kind.targets_server:
            return self._apply_server_fault(target, inject)
        targets = [t.strip() for t in target.split(",")]
        with self.model_lock:
            unknown = [t for t in targets if t not in self.hosts]
            if unknown:
                known = ", ".join(self.hosts)
                raise FaultError(404, f"unknown host {unknown[0]!r} (hosts: {known})")
            if len(set(targets)) != len(targets):
                raise FaultError(400, f"a host is named twice in {target!r}")
            if kind.needs_physnet and not physnet:
                raise FaultError(400, f"{kind} needs a physnet ({', '.join(PHYSNETS)})")
            # Validate on copies first, so a refused host changes none of them.
            for t in targets:
                copy.deepcopy(self.hosts[t]).apply(kind, inject, physnet)
            for t in targets:
                self.hosts[t].apply(kind, inject, physnet)
                if kind is FaultKind.BMC_UNREACHABLE:
                    self.bmcs.set_reachable(t, not inject)
            record = self._record(action, kind, ",".join(targets), physnet)
        self._on_change()  # before Nova: the agent is what dies first
        for t in targets:
            if wait:
                self._reconcile(t)
            else:
                self._reconciler.submit(self._reconcile_logged, t)
        return record

    def _apply_server_fault(self, target: str, inject: bool) -> dict[str, Any]:
        with self.reconcile_lock:
            with self.model_lock:
                if target not in self.servers:
                    raise FaultError(404, f"unknown server {target!r}")
                if (target in self.crashed_servers) == inject:
                    state = "already crashed" if inject else "not crashed"
                    raise FaultError(409, f"server {target} is {state}")
                record = self._record(
                    "inject" if inject else "heal", FaultKind.SERVER_CRASH, target, None
                )
            self.services.control("POST", f"/servers/{target}/{'crash' if inject else 'heal'}")
            with self.model_lock:
                (self.crashed_servers.add if inject else self.crashed_servers.discard)(target)
            return record

    def _apply_controller_fault(self, kind: FaultKind, target: str, inject: bool) -> dict[str, Any]:
        if self.controllers is None:
            raise FaultError(400, f"{kind} needs a lab of several controllers (--controllers)")
        # One controller fault at a time, recorded as it strikes; never under the model's
        # lock: finding the owner asks the controllers, and the agents must not wait.
        with self._controller_lock:
            struck = self.controllers.apply(kind, target, inject)
            record = self._record("inject" if inject else "heal", kind, target, None)
        return {**record, **struck}

    def _reconcile_logged(self, host: str) -> None:
        try:
            self._reconcile(host)
        except Exception:
            log.exception("reconciling %s after a BMC power change failed", host)

    def _reconcile(self, host: str) -> None:
        """Make Nova's compute service and the host's domains match the fault model."""
        with self.reconcile_lock:
            with self.model_lock:
                want = self.hosts[host]
                heartbeating, domains_alive, boots = (
                    want.compute_heartbeating,
                    want.domains_alive,
                    want.boots,
                )
            actual = self.services.control("GET", "/hosts")["hosts"][host]
            running, alive = actual["compute_running"], actual["domains_alive"]
            rebooted = boots != self._booted[host]  # e.g. a BMC power reset: off, then on
            if running and (not heartbeating or rebooted):
                keep = domains_alive and not rebooted
                self.services.control(
                    "POST", f"/hosts/{host}/stop", {"domains": "keep" if keep else "destroy"}
                )
                running, alive = False, keep
            if not running and heartbeating:
                body = {"domains_alive": alive and not rebooted}
                self.services.control("POST", f"/hosts/{host}/start", body)
            elif not running and alive and not domains_alive:
                self.services.control("POST", f"/hosts/{host}/stop", {"domains": "destroy"})
            self._booted[host] = boots

    def _record(
        self, action: str, kind: FaultKind, target: str, physnet: str | None
    ) -> dict[str, Any]:
        t, iso = wall_clock()
        record = {"action": action, "kind": str(kind), "target": target, "time": t, "at": iso}
        if physnet:
            record["physnet"] = physnet
        with self.paths.faults_log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    async def restart_compute(self, host: str) -> None:
        """What `systemctl restart nova-compute` is on a lab host: the process runs again."""
        with self.model_lock:
            down = self.hosts[host].compute_process_down
        if down:
            await asyncio.to_thread(self.apply_fault, FaultKind.COMPUTE_PROCESS_DOWN, host, False)

    def probe(self, host: str) -> Checks:
        """What the host's agent sees: called by its probes once per heartbeat."""
        with self.model_lock:
            faults = self.hosts[host]
            crashed = tuple(
                sid for sid in sorted(self.crashed_servers) if self.servers[sid]["host"] == host
            )
            return Checks(
                compute_alive=not faults.compute_process_down,
                links_down=tuple(sorted(faults.links_down)),
                domains_down=crashed,
            )

    # PowerHooks for the BMCs: IPMI and Redfish power control reach the fault model. They
    # run on the BMCs' threads, so they change the model at once and never wait for Nova.
    def power_state(self, host: str) -> bool:
        with self.model_lock:
            return self.hosts[host].power_on

    def _set_power(self, host: str, on: bool) -> None:
        with self.model_lock:
            change = self.hosts[host].power_on != on
        if change:
            self.apply_fault(FaultKind.POWER_LOSS, host, inject=not on, wait=False)
        if not on:
            # Nova catches up in the background, but the servers stop now: a BMC that
            # says "off" while they still run would let an evacuated server run twice.
            self.services.control("POST", f"/hosts/{host}/power-cut")

    def power_off(self, host: str) -> None:
        self._set_power(host, False)

    def power_soft(self, host: str) -> None:
        self._set_power(host, False)

    def power_on(self, host: str) -> None:
        self._set_power(host, True)

    def power_reset(self, host: str) -> None:
        self._set_power(host, False)
        self._set_power(host, True)

    def stop(self) -> None:
        """Let a reconciliation under way finish; drop those not started."""
        self._reconciler.shutdown(wait=True, cancel_futures=True)

"""The lab's fault model: which faults are active on each host, and what that means.

A host's observable condition (is nova-compute heartbeating? are its domains running?
does its BMC say power on?) is derived from its set of active faults, so injecting and
healing in any order always converges to one well-defined state (level-triggered).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FaultKind(enum.StrEnum):
    HOST_CRASH = "host-crash"
    POWER_LOSS = "power-loss"
    MGMT_PARTITION = "mgmt-partition"
    COMPUTE_PROCESS_DOWN = "compute-process-down"
    SERVER_CRASH = "server-crash"
    LINK_DOWN = "link-down"
    BMC_UNREACHABLE = "bmc-unreachable"
    # A lab of several controllers: the owner of a host (or a member id) is struck.
    CONTROLLER_KILL = "controller-kill"
    CONTROLLER_PAUSE = "controller-pause"
    CONTROLLER_PARTITION = "controller-partition"

    @property
    def targets_controller(self) -> bool:
        return self in (
            FaultKind.CONTROLLER_KILL,
            FaultKind.CONTROLLER_PAUSE,
            FaultKind.CONTROLLER_PARTITION,
        )

    @property
    def targets_server(self) -> bool:
        return self is FaultKind.SERVER_CRASH

    @property
    def needs_physnet(self) -> bool:
        return self is FaultKind.LINK_DOWN


class FaultError(Exception):
    """An inject or heal that cannot apply; nothing was changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class HostFaults:
    """Active faults of one simulated host. ``power_on`` is the BMC's chassis power."""

    name: str
    physnets: tuple[str, ...]
    power_on: bool = True
    os_dead: bool = False  # host-crash: kernel gone, power still on
    partitioned: bool = False
    compute_process_down: bool = False
    bmc_unreachable: bool = False
    links_down: set[str] = field(default_factory=set)
    boots: int = 0  # how many times the OS came back (after power-loss or a crash)

    # -- what the rest of the lab observes --------------------------------------

    @property
    def os_running(self) -> bool:
        return self.power_on and not self.os_dead

    @property
    def domains_alive(self) -> bool:
        """The host's guests run (on a partitioned host too: that is the danger)."""
        return self.os_running

    @property
    def compute_heartbeating(self) -> bool:
        """nova-compute reaches the control plane and reports its heartbeat."""
        return self.os_running and not self.partitioned and not self.compute_process_down

    @property
    def agent_reachable(self) -> bool:
        """The medevac agent's heartbeats reach the controller."""
        return self.os_running and not self.partitioned

    def active(self) -> list[str]:
        out = []
        if not self.power_on:
            out.append(str(FaultKind.POWER_LOSS))
        if self.os_dead:
            out.append(str(FaultKind.HOST_CRASH))
        if self.partitioned:
            out.append(str(FaultKind.MGMT_PARTITION))
        if self.compute_process_down:
            out.append(str(FaultKind.COMPUTE_PROCESS_DOWN))
        if self.bmc_unreachable:
            out.append(str(FaultKind.BMC_UNREACHABLE))
        out.extend(f"{FaultKind.LINK_DOWN}:{p}" for p in sorted(self.links_down))
        return out

    # -- transitions ------------------------------------------------------------

    def apply(self, kind: FaultKind, inject: bool, physnet: str | None = None) -> None:
        """Inject (``inject=True``) or heal one fault; FaultError if it does not apply."""
        verb = "inject" if inject else "heal"
        if kind is FaultKind.LINK_DOWN:
            if physnet not in self.physnets:
                known = ", ".join(self.physnets)
                raise FaultError(404, f"host {self.name} has no physnet {physnet!r} ({known})")
            if (physnet in self.links_down) == inject:
                raise FaultError(409, self._noop(kind, inject, physnet))
            (self.links_down.add if inject else self.links_down.discard)(physnet)
            return
        attr = _HOST_FLAGS.get(kind)
        if attr is None:
            raise FaultError(400, f"cannot {verb} {kind} on a host")
        current = getattr(self, attr)
        # power_on is the inverse flag of the power-loss fault.
        active = (not current) if attr == "power_on" else current
        if active == inject:
            raise FaultError(409, self._noop(kind, inject, None))
        setattr(self, attr, (not inject) if attr == "power_on" else inject)
        if kind is FaultKind.POWER_LOSS and not inject:
            self.os_dead = False  # power comes back: the host boots clean
        if kind in (FaultKind.POWER_LOSS, FaultKind.HOST_CRASH) and not inject:
            self.boots += 1

    def _noop(self, kind: FaultKind, inject: bool, physnet: str | None) -> str:
        what = f"{kind} {self.name}" + (f" {physnet}" if physnet else "")
        return f"{what} is {'already active' if inject else 'not active'}"


_HOST_FLAGS = {
    FaultKind.HOST_CRASH: "os_dead",
    FaultKind.POWER_LOSS: "power_on",
    FaultKind.MGMT_PARTITION: "partitioned",
    FaultKind.COMPUTE_PROCESS_DOWN: "compute_process_down",
    FaultKind.BMC_UNREACHABLE: "bmc_unreachable",
}

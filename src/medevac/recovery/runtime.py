"""What a recovery's steps act through: the cloud, the fencer, the store, the event and
audit sinks, the inspector's waits; passed to the steps explicitly, never read from
module globals."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from medevac.cloud.models import ComputeService, DataPlaneStatus, Port, Server
from medevac.cluster.ownership import Ownership, SoleController
from medevac.notifier.events import Event
from medevac.recovery.fence import Fencer
from medevac.recovery.groups import GroupResolver
from medevac.recovery.policy import HostGroup
from medevac.recovery.task_ends import TaskEnds
from medevac.storage.records import Fence, RecoveryStore

log = logging.getLogger(__name__)

# The host this execution of a workflow acts on and the epoch it started under, set
# at its start in its own task: its steps' tasks inherit it, a second execution of
# the same workflow (a resume) has its own.
_run_pin: ContextVar[tuple[str, int | None] | None] = ContextVar("recovery_run", default=None)
PINS_KEPT = 10_000  # executions remembered (what a takeover asks of them), oldest dropped


class RecoveryCloud(Protocol):
    async def set_forced_down(self, host: str, forced_down: bool = True) -> ComputeService: ...

    async def set_enabled(
        self, host: str, enabled: bool, reason: str | None = None
    ) -> ComputeService: ...

    async def get_compute_service(self, host: str) -> ComputeService: ...

    async def list_host_servers(self, host: str) -> list[Server]: ...

    async def get_server(self, server_id: str) -> Server: ...

    async def evacuate(
        self, server_id: str, host: str | None = None, on_shared_storage: bool = False
    ) -> None: ...

    async def stop_server(self, server_id: str) -> None: ...

    async def start_server(self, server_id: str) -> None: ...

    async def reboot_server(self, server_id: str, hard: bool = True) -> None: ...

    async def list_server_ports(self, server_id: str) -> list[Port]: ...

    async def set_data_plane_status(self, port_id: str, status: DataPlaneStatus | None) -> Port: ...


@dataclass(frozen=True)
class RecoverySettings:
    evacuate_timeout: float = 120.0  # one server, request to arrival
    evacuate_attempts: int = 2  # per destination
    poll_interval: float = 0.5
    # A server waited on is read this often while Nova's notifications are heard
    # (they wake the wait when its task ends): a safety net for a lost notification.
    notified_poll_interval: float = 5.0
    restart_timeout: float = 60.0  # one server restart, request to running
    restart_attempts: int = 3
    nova_down_timeout: float = 300.0  # level 3: how long to wait for Nova to see it
    compute_restart_attempts: int = 3  # nova-compute restarts asked of the agent
    compute_restart_wait: float = 30.0  # per attempt: until the agent says it runs (s)


@dataclass
class RecoveryRuntime:
    """What the workflows' steps use; built once per process before DBOS launches."""

    cloud: RecoveryCloud
    fencer: Fencer
    store: RecoveryStore
    # The host groups (segments over the configured ones), or just configured ones.
    groups: GroupResolver | Sequence[HostGroup]
    settings: RecoverySettings
    emit: Callable[[list[Event]], Any]
    audit: Callable[[str, str, dict[str, Any], str | None], Any]
    # Waits until the inspector's state actions on a server and its ports are done.
    settled: Callable[[str], Awaitable[None]]
    # Told (incident id, recovery id, state, when, ended) as a recovery records each
    # state: its host's lifecycle follows; once ended, its incident follows the cloud
    # and the profiler exports the fault.
    progress: Callable[[str, str, str, float, bool], Any] | None = None
    # Told (recovery id, server id, result) as a server's evacuation records each step.
    evacuation_progress: Callable[[str, str, str], Any] | None = None
    # Asks a host's agent to restart nova-compute (False: the agent is not heard), and
    # what the agent last said of it; None when restarts are not configured.
    restart_compute: Callable[[str], bool] | None = None
    compute_alive: Callable[[str], bool | None] | None = None
    # Nova's notifications of tasks ending (wired to the listener when there is one).
    task_ends: TaskEnds = field(default_factory=TaskEnds)
    # Puts back the ports the inspector set DOWN on a server of a failed host (how
    # many; None: it knows nothing of that host).
    restore_ports: Callable[[str, str], Awaitable[int | None]] | None = None
    # Who owns each host: a step acts on a host only under this controller's epoch.
    ownership: Ownership = field(default_factory=SoleController)
    stood_down: int = 0  # steps that found their host owned by another controller
    pinned: OrderedDict[str, tuple[str, int | None]] = field(default_factory=OrderedDict)
    # Evacuation slots per host group, shared by the group's recoveries (in-process:
    # a resumed workflow takes a slot again, so nothing durable is needed).
    _slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    host_groups: GroupResolver = field(init=False)

    def __post_init__(self) -> None:
        g = self.groups
        self.host_groups = g if isinstance(g, GroupResolver) else GroupResolver(g)

    async def acting_on(
        self, host: str, step: str, write: Callable[[Fence | None], None] | None = None
    ) -> None:
        """Return once this controller may do ``step`` on ``host`` (recorded under its
        epoch, with ``write`` in the same transaction). While it still holds the host
        under the same epoch, a refusal (the store did not answer, the lease is being
        renewed) is tried again. When another controller owns the host, never return:
        that controller resumes the recovery from its last recorded step, and this
        copy of it stands down until the process ends, recording nothing (a step that
        ended here with an error or a result would overwrite the new owner's record)."""
        held = self.ownership.epoch_of(host)
        pin = _run_pin.get()
        if pin is not None and pin[0] == host and pin[1] != held:
            held = None  # this execution began under another epoch: a stale copy
        wait = 0.25
        while held is not None and self.ownership.epoch_of(host) == held:
            if await self.ownership.authorize(host, f"recovery.{step}", {}, None, write):
                return
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)
        self.stood_down += 1
        log.warning("%s's recovery step %s stands down: another controller owns it", host, step)
        await asyncio.Event().wait()

    def pin(self, workflow_id: str, host: str) -> None:
        """At the start of each execution of a workflow: its steps act on ``host`` only
        under the epoch this controller holds it at now. An execution still running
        after its controller lost the host stands down at its next step, even once
        the host is back under a newer epoch: the one resumed then does the rest."""
        epoch = self.ownership.epoch_of(host)
        _run_pin.set((host, epoch))
        self.pinned[workflow_id] = (host, epoch)
        self.pinned.move_to_end(workflow_id)
        while len(self.pinned) > PINS_KEPT:
            self.pinned.popitem(last=False)

    def stale_here(self, workflow_id: str) -> bool:
        """Whether this process's execution of the workflow began under an epoch it no
        longer holds (it stands down at its next step: the workflow is to resume)."""
        pin = self.pinned.get(workflow_id)
        return pin is not None and pin[1] != self.ownership.epoch_of(pin[0])

    async def next_read(self, told: asyncio.Event, *, ending: bool = False) -> bool:
        """``ending``: Nova already said the task ended, the rest follows within moments."""
        s = self.settings
        patient = s.poll_interval if ending else s.notified_poll_interval
        return await self.task_ends.next_read(told, s.poll_interval, patient)

    def slots(self, group: HostGroup) -> asyncio.Semaphore:
        if group.name not in self._slots:
            self._slots[group.name] = asyncio.Semaphore(max(1, group.concurrency))
        return self._slots[group.name]

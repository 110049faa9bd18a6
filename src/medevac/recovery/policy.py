"""Which servers of a failed host to recover, how, in what order, and where to.

Pure functions over data (no I/O), in the Masakari tradition: a server opts in with
``HA_Enabled=True`` metadata; medevac's own keys refine it (``medevac:action`` =
evacuate | restart | none, ``medevac:priority`` = an integer, higher first); a host
group (a Masakari segment) decides the rest.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HA_KEY = "HA_Enabled"
ACTION_KEY = "medevac:action"
PRIORITY_KEY = "medevac:priority"


class RecoveryMethod(enum.StrEnum):
    AUTO = "auto"  # Nova's scheduler picks the destination
    RESERVED_HOST = "reserved_host"  # only the group's reserved hosts
    AUTO_PRIORITY = "auto_priority"  # auto, then the reserved hosts
    RH_PRIORITY = "rh_priority"  # the reserved hosts, then auto


class Level(enum.IntEnum):
    """The seed's quick-evacuate levels."""

    FORCE_DOWN_ONLY = 1  # no fencing: fastest, unsafe unless the host is surely dead
    FENCE = 2  # fence, confirm power off, force down, evacuate (default)
    NOVA_SEES_DOWN = 3  # no force-down of our own: wait for Nova to see the service down


class ServerAction(enum.StrEnum):
    EVACUATE = "evacuate"
    RESTART = "restart"
    NONE = "none"


@dataclass(frozen=True)
class HostGroup:
    name: str = "default"
    hosts: tuple[str, ...] = ("*",)  # shell wildcards
    level: Level = Level.FENCE
    recovery_method: RecoveryMethod = RecoveryMethod.AUTO
    reserved_hosts: tuple[str, ...] = ()
    evacuate_all: bool = False  # also servers without HA_Enabled=True
    ignore_error_servers: bool = False  # skip servers already in error before the fault
    on_shared_storage: bool = False
    concurrency: int = 4
    auto_release: bool = False
    # Planned maintenance: also live-migrate servers without HA (default: left).
    maintenance_migrate_all: bool = False

    def contains(self, host: str) -> bool:
        return any(fnmatch.fnmatchcase(host, p) for p in self.hosts)


def group_of(host: str, groups: Sequence[HostGroup]) -> HostGroup:
    """The first group whose patterns match the host; the default group otherwise."""
    for g in groups:
        if g.contains(host):
            return g
    return HostGroup()


@dataclass(frozen=True)
class ServerFacts:
    """What recovery needs to know of a server, as it was before the fault."""

    id: str
    name: str
    vm_state: str  # before the inspector reset it: active, stopped, error, ...
    metadata: Mapping[str, str] = field(default_factory=dict)
    project_id: str = ""


@dataclass(frozen=True)
class Planned:
    server_id: str
    name: str
    action: ServerAction
    priority: int
    expected_status: str  # the status it must reach elsewhere: ACTIVE or SHUTOFF
    project_id: str = ""


def server_action(metadata: Mapping[str, str], group: HostGroup) -> tuple[ServerAction, int]:
    raw = (metadata.get(ACTION_KEY) or "").strip().lower()
    try:
        priority = int(metadata.get(PRIORITY_KEY, "0"))
    except ValueError:
        priority = 0
    if raw in ServerAction.__members__.values():
        return ServerAction(raw), priority
    ha = (metadata.get(HA_KEY) or "").strip().lower() == "true"
    return (ServerAction.EVACUATE if ha or group.evacuate_all else ServerAction.NONE), priority


def order_key(
    metadata: Mapping[str, str], name: str, server_id: str, group: HostGroup
) -> tuple[bool, int, str, str]:
    """Servers to evacuate first, highest priority first, then by name: the order of
    `plan`, extended to the servers it leaves out (last)."""
    action, priority = server_action(metadata, group)
    return (action is not ServerAction.EVACUATE, -priority, name, server_id)


UNRECOVERABLE = frozenset({"deleted", "soft-delete", "soft_deleted", "building", "rescued"})


def plan(servers: Iterable[ServerFacts], group: HostGroup) -> list[Planned]:
    """The servers to evacuate, highest priority first (then by name, for a stable order)."""
    out = []
    for s in servers:
        action, priority = server_action(s.metadata, group)
        if action is not ServerAction.EVACUATE or s.vm_state in UNRECOVERABLE:
            continue
        if s.vm_state == "error" and group.ignore_error_servers:
            continue
        expected = "SHUTOFF" if s.vm_state == "stopped" else "ACTIVE"
        out.append(Planned(s.id, s.name, action, priority, expected, s.project_id))
    return sorted(out, key=lambda p: (-p.priority, p.name, p.server_id))


def destinations(group: HostGroup, failed_host: str) -> list[str | None]:
    """Where to try, in order: a host name, or None for Nova's scheduler."""
    reserved = [h for h in group.reserved_hosts if h != failed_host]
    method = group.recovery_method
    if method is RecoveryMethod.AUTO:
        return [None]
    if method is RecoveryMethod.RESERVED_HOST:
        return list(reserved)
    if method is RecoveryMethod.AUTO_PRIORITY:
        return [None, *reserved]
    return [*reserved, None]


# -- the safety gates: fencing before evacuation (DESIGN rules 1 and 2) ---------------


def must_fence(level: Level, verdict: str) -> bool:
    """Whether the host is fenced before anything of it runs elsewhere: at every level
    but 1, unless level 3's verdict is HOST_DOWN (its BMC already said off)."""
    if level is Level.FORCE_DOWN_ONLY:
        return False
    return level is Level.FENCE or verdict != "HOST_DOWN"


class AfterFencing(enum.StrEnum):
    EVACUATE = "evacuate"
    HOLD = "hold"  # not confirmed off: left forced down for an operator, nothing moves


def after_fencing(confirmed: bool) -> AfterFencing:
    """An unconfirmed fencing never leads to an evacuation (rule 2)."""
    return AfterFencing.EVACUATE if confirmed else AfterFencing.HOLD


# -- judging a server's state as Nova reports it --------------------------------------


def runs(status: str, power_state: int | None, task_state: str | None) -> bool:
    """Nova shows the server running, with no task under way."""
    return status == "ACTIVE" and power_state == 1 and task_state is None


class Restart(enum.StrEnum):
    RUNNING = "running"  # nothing to do
    BUSY = "busy"  # a start or reboot is already under way
    START = "start"  # Nova stopped it: start it
    REBOOT = "reboot"  # its domain is dead: hard reboot


def restart_action(status: str, power_state: int | None, task_state: str | None) -> Restart:
    """How a server whose domain died is brought back where it is."""
    if runs(status, power_state, task_state):
        return Restart.RUNNING
    if task_state is not None:
        return Restart.BUSY
    return Restart.START if status == "SHUTOFF" else Restart.REBOOT


class Arrival(enum.StrEnum):
    ARRIVED = "arrived"  # on another host, in the state it had before the fault
    STOP_IT = "stop-it"  # rebuilt running, but it was stopped before: stop it there
    FAILED = "failed"  # rebuilt in ERROR
    WAIT = "wait"  # not yet


def judge_arrival(
    host: str | None,
    status: str,
    task_state: str | None,
    failed_host: str,
    expected: str,
    *,
    stop_asked: bool,
) -> Arrival:
    """How an evacuated server's arrival is judged from one read of it."""
    moved = host not in (None, failed_host) and task_state is None
    if not moved:
        return Arrival.WAIT
    if status == expected:
        return Arrival.ARRIVED
    if expected == "SHUTOFF" and status == "ACTIVE" and not stop_asked:
        return Arrival.STOP_IT
    if status == "ERROR":
        return Arrival.FAILED
    return Arrival.WAIT

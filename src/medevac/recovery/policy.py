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

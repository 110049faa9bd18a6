"""Planned maintenance of a host, the pure part: what happens to each of its servers,
when the migrations may start, how one is judged, how the maintenance ends.

In the line of OPNFV Doctor's maintenance scenario (and OpenStack Fenix): the owners
are told first (``maintenance.scheduled``, one event per server, with the deadline),
may answer until then (acknowledge, or ask for their server to be left), and at the
deadline, or once every owner answered, the HA servers are live-migrated away in the
host group's priority order. Servers without HA are left unless the group says
otherwise; a server whose owner asked is always left.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from medevac.recovery.policy import HostGroup, ServerAction, server_action

# The events a maintenance sends. Doctor's ``maintenance.scheduled`` and
# ``maintenance.complete`` go to the owners (one per server, with its project, so a
# project's alarms see its own); the seeds name no event for a host emptied, hence
# ``maintenance.host.empty`` (and its siblings when the host is not empty).
SCHEDULED_EVENT = "maintenance.scheduled"
MIGRATED_EVENT = "maintenance.instance.migrated"
HOST_EMPTY_EVENT = "maintenance.host.empty"
HOST_READY_EVENT = "maintenance.host.ready"  # migrations done, servers left by choice
HOST_PARTIAL_EVENT = "maintenance.host.migration_failed"  # some could not be moved
INTERRUPTED_EVENT = "maintenance.interrupted"  # the host was lost meanwhile
COMPLETE_EVENT = "maintenance.complete"


class Answer(enum.StrEnum):
    ACK = "ack"  # the owner acknowledges: do as planned
    LEAVE = "leave"  # the owner asks for the server to stay on the host


class Disposition(enum.StrEnum):
    MIGRATE = "migrate"
    LEAVE = "leave"


class MaintenanceState(enum.StrEnum):
    SCHEDULED = "SCHEDULED"  # disabled, owners told, answers taken until the deadline
    MIGRATING = "MIGRATING"  # the servers to move are being live-migrated
    EMPTY = "EMPTY"  # no server left on the host
    READY = "READY"  # every migration done; servers left by their owners or the group
    PARTIAL = "PARTIAL"  # some migrations failed: those servers are still on the host
    INTERRUPTED = "INTERRUPTED"  # the host was lost meanwhile: its recovery took over
    ENDED = "ENDED"  # ended by an operator: the service enabled again


OPEN = frozenset(set(MaintenanceState) - {MaintenanceState.ENDED})
# Migrations under way cannot be ended: they end on their own, each verified.
ENDABLE = frozenset(OPEN - {MaintenanceState.MIGRATING})


@dataclass(frozen=True)
class HostServer:
    """One server found on the host when the maintenance started."""

    id: str
    name: str
    project_id: str
    vm_state: str
    metadata: Mapping[str, str] = field(default_factory=dict)


# Live migration moves a running (or paused) server only.
LIVE_MIGRATABLE = frozenset({"active", "paused"})


def is_ha(metadata: Mapping[str, str], group: HostGroup) -> bool:
    """The server is one the group recovers (``HA_Enabled=True`` or its own
    ``medevac:action``), as a failure would; the group's ``evacuate_all`` aside."""
    plain = HostGroup(name=group.name, hosts=group.hosts)
    action, _ = server_action(metadata, plain)
    return action is not ServerAction.NONE


def disposition(
    server: HostServer, group: HostGroup, answer: Answer | None
) -> tuple[Disposition, str]:
    """What happens to one server at the deadline, and why."""
    if answer is Answer.LEAVE:
        return Disposition.LEAVE, "its owner asked for it to be left"
    ha = is_ha(server.metadata, group)
    if not ha and not group.maintenance_migrate_all:
        return Disposition.LEAVE, "not HA: the host group leaves such servers"
    if server.vm_state not in LIVE_MIGRATABLE:
        return Disposition.LEAVE, f"{server.vm_state or 'unknown'}: only a running server moves"
    return Disposition.MIGRATE, "HA" if ha else "the host group moves every server"


def priority(metadata: Mapping[str, str]) -> int:
    try:
        return int(metadata.get("medevac:priority", "0"))
    except ValueError:
        return 0


def plan(
    servers: Iterable[HostServer], answers: Mapping[str, Answer], group: HostGroup
) -> tuple[list[HostServer], dict[str, str]]:
    """The servers to migrate, highest priority first (then by name), and each server
    left with the reason."""
    moving: list[HostServer] = []
    left: dict[str, str] = {}
    for s in servers:
        what, why = disposition(s, group, answers.get(s.id))
        if what is Disposition.MIGRATE:
            moving.append(s)
        else:
            left[s.id] = why
    moving.sort(key=lambda s: (-priority(s.metadata), s.name, s.id))
    return moving, left


def may_migrate(
    now: float, deadline: float | None, servers: Iterable[str], answered: set[str]
) -> bool:
    """The migrations start at the deadline, or once every server's owner answered; at
    once when there is no deadline."""
    return deadline is None or now >= deadline or set(servers) <= answered


class Migration(enum.StrEnum):
    ARRIVED = "arrived"  # running on another host, no task
    FAILED = "failed"  # on another host in ERROR
    ROLLED_BACK = "rolled-back"  # Nova put it back on the source: the migration failed
    WAIT = "wait"


def judge_migration(
    host: str | None, status: str, task_state: str | None, source: str
) -> Migration:
    """One read of a server whose live migration was asked (Nova sets its task to
    ``migrating`` before it answers, so no task on the source means it went back)."""
    if task_state is not None:
        return Migration.WAIT
    if host not in (None, source):
        if status in ("ACTIVE", "PAUSED"):
            return Migration.ARRIVED
        return Migration.FAILED if status == "ERROR" else Migration.WAIT
    return Migration.ROLLED_BACK if host == source else Migration.WAIT


def outcome(servers_left: int, failed: int, interrupted: bool) -> MaintenanceState:
    """How the migration phase ends, from the host as listed once it is over."""
    if interrupted:
        return MaintenanceState.INTERRUPTED
    if failed:
        return MaintenanceState.PARTIAL
    return MaintenanceState.READY if servers_left else MaintenanceState.EMPTY


def answerable(state: MaintenanceState) -> bool:
    """Owners answer while the maintenance is scheduled, not once migrations began."""
    return state is MaintenanceState.SCHEDULED

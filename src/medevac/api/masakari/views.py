"""Masakari's answers from medevac's records, derived when read (pure).

A notification keeps only what it said and what the monitor made of it (``outcome``);
its ``status``, ``recovery_workflow_details`` and vmoves come from the incident it
led to and that incident's recoveries, so nothing is kept in step by hand:

- ignored by the monitor (with its reason), or a Masakari no-op: ``ignored`` /
  ``finished``;
- accepted, no incident yet: ``new`` while the confirmation may still give a verdict
  (``CONFIRM_WINDOW``), then ``ignored`` (medevac's own checks found nothing to recover);
- a recovery under way: ``running``; all ended well: ``finished``; one failed or was
  held (fencing unconfirmed, partial evacuation): ``failed``;
- no recovery (state correction only, or recovery off): the incident's state decides,
  ``HELD`` being ``error`` (waiting for an operator or the mass-failure guard);
- ``new``, ``running`` or ``error`` a day old: ``failed``, as Masakari does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from medevac.storage.segments import NotificationRow, SegmentHostRow, SegmentRow

CONFIRM_WINDOW = 60.0  # s: a suspicion is confirmed or cleared well within this
GIVE_UP_AFTER = 86400.0  # s: Masakari's notifications_expired_interval
OPEN_STATUSES = frozenset({"new", "running", "error"})
RECOVERY_FAILED = frozenset({"PARTIAL", "FAILED", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"})
VMOVE_STATUS = {
    "running": "ongoing",
    "recovered": "succeeded",
    "already-moved": "succeeded",
    "failed": "failed",
}
VMOVE_KEYS = (
    "id",
    "uuid",
    "instance_uuid",
    "instance_name",
    "source_host",
    "dest_host",
    "start_time",
    "end_time",
    "type",
    "status",
    "created_at",
    "updated_at",
)
_VMOVES = uuid.UUID("6d656465-7661-6320-766d-6f7665730000")  # names vmove uuids


def when(value: datetime | float | None) -> str | None:
    """A time as Masakari writes it: ``2017-04-21T08:59:53.000000`` (UTC)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _stamp(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.timestamp()


# -- segments and hosts ---------------------------------------------------------------


def segment_view(s: SegmentRow) -> dict[str, Any]:
    return {
        "id": s.id,
        "uuid": s.uuid,
        "name": s.name,
        "description": s.description,
        "recovery_method": s.recovery_method,
        "service_type": s.service_type,
        "enabled": s.enabled,
        "created_at": when(s.created_at),
        "updated_at": when(s.updated_at),
        "deleted_at": None,
        "deleted": False,
    }


def host_view(h: SegmentHostRow, segment: SegmentRow) -> dict[str, Any]:
    return {
        "id": h.id,
        "uuid": h.uuid,
        "name": h.name,
        "failover_segment_id": h.segment_uuid,
        "failover_segment": segment_view(segment),
        "type": h.type,
        "reserved": h.reserved,
        "control_attributes": h.control_attributes,
        "on_maintenance": h.on_maintenance,
        "created_at": when(h.created_at),
        "updated_at": when(h.updated_at),
        "deleted_at": None,
        "deleted": False,
    }


# -- notifications --------------------------------------------------------------------


def linked_incident(
    n: NotificationRow, incidents: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The incident a notification led to: its host's incident open when it came, or
    the first opened within ``CONFIRM_WINDOW`` after (``incidents`` oldest first)."""
    if n.outcome != "accepted":
        return None
    came = n.created_at.timestamp()
    for inc in incidents:
        if inc["host"] != n.hostname:
            continue
        closed = inc.get("closed_at")
        if inc["opened_at"] <= came + CONFIRM_WINDOW and (closed is None or closed >= came):
            return inc
    return None


def notification_status(
    n: NotificationRow,
    incident: Mapping[str, Any] | None,
    recoveries: Sequence[Mapping[str, Any]],
    now: float,
) -> tuple[str, str | None]:
    """(status, message) of a notification, as the module's docstring says."""
    if n.outcome == "finished":
        return "finished", n.message
    if n.outcome != "accepted":
        return "ignored", n.message
    status, message = _accepted_status(n, incident, recoveries, now)
    if status in OPEN_STATUSES and now - n.created_at.timestamp() > GIVE_UP_AFTER:
        return "failed", "not recovered within a day"
    return status, message


def _accepted_status(
    n: NotificationRow,
    incident: Mapping[str, Any] | None,
    recoveries: Sequence[Mapping[str, Any]],
    now: float,
) -> tuple[str, str | None]:
    if incident is None:
        if now - n.created_at.timestamp() < CONFIRM_WINDOW:
            return "new", None
        return "ignored", (
            "not confirmed: medevac's own checks (the host's agent, its BMC) found "
            "nothing to recover"
        )
    if any(r["ended_at"] is None for r in recoveries):
        return "running", None
    failed = [r for r in recoveries if r["state"] in RECOVERY_FAILED]
    if failed:
        return "failed", f"recovery {failed[-1]['id']} ended {failed[-1]['state']}"
    if recoveries:
        return "finished", None
    state = incident["state"]
    if state == "HELD":
        return "error", incident.get("held_reason") or "held for an operator"
    if state in ("OPEN", "CORRECTING"):
        return "running", None
    if state == "PARTIAL":
        return "failed", "the state corrections did not all succeed"
    return "finished", None


def notification_view(n: NotificationRow, status: str, message: str | None) -> dict[str, Any]:
    return {
        "id": n.id,
        "notification_uuid": n.uuid,
        "generated_time": when(n.generated_time),
        "source_host_uuid": n.source_host_uuid,
        "type": n.type,
        "payload": n.payload,
        "status": status,
        "failover_segment_uuid": n.segment_uuid,
        "message": message,
        "created_at": when(n.created_at),
        "updated_at": when(n.updated_at),
        "deleted_at": None,
        "deleted": False,
    }


def workflow_details(
    incident: Mapping[str, Any] | None, recoveries: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``recovery_workflow_details`` (1.1): the incident's verdicts, then each recovery
    with its evacuations, as Masakari's tasks with their progress."""
    out: list[dict[str, Any]] = []
    if incident is None:
        return out
    done = incident["state"] in ("CORRECTED", "CLOSED")
    out.append(
        _task(
            "medevac:incident",
            "SUCCESS" if done else ("FAILURE" if incident["state"] == "PARTIAL" else "RUNNING"),
            1.0 if done else 0.5,
            [
                (v.get("at"), f"verdict {v.get('kind')}" + _about(v.get("subject")))
                for v in incident.get("verdicts", [])
            ],
        )
    )
    for r in recoveries:
        evacs = r.get("evacuations", [])
        ended = r["ended_at"] is not None
        progress = 1.0 if ended else _share(e["ended_at"] is not None for e in evacs)
        state = "RUNNING"
        if ended:
            state = "FAILURE" if r["state"] in RECOVERY_FAILED else "SUCCESS"
        steps = [(r["started_at"], f"recovery {r['id']} started")]
        steps += [(e["ended_at"] or e["started_at"], _evacuation_text(e)) for e in evacs]
        steps.append((r["updated_at"], f"recovery {r['id']}: {r['state']}"))
        out.append(_task(f"medevac:{r['id'].split('-', 1)[0]}", state, progress, steps))
    return out


def _about(subject: Any) -> str:
    return f" ({subject})" if subject else ""


def _share(flags: Any) -> float:
    values = list(flags)
    return round(sum(values) / len(values), 2) if values else 0.0


def _evacuation_text(e: Mapping[str, Any]) -> str:
    where = f" to {e['to_host']}" if e.get("to_host") else ""
    return f"server {e['server_name']} ({e['server_id']}): {e['result']}{where}"


def _task(
    name: str, state: str, progress: float, steps: Sequence[tuple[Any, str]]
) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "progress": progress,
        "progress_details": [
            {"timestamp": when(at), "message": message, "progress": f"{progress:.1f}"}
            for at, message in steps
        ],
    }


# -- vmoves ---------------------------------------------------------------------------


def vmoves(n: NotificationRow, recoveries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The servers a host notification's recoveries evacuated, as Masakari's vmoves."""
    out = []
    for r in recoveries:
        for e in r.get("evacuations", []):
            status = VMOVE_STATUS.get(e["result"], "pending")
            out.append(
                {
                    "id": e["id"],
                    "uuid": str(uuid.uuid5(_VMOVES, f"{r['id']}:{e['server_id']}")),
                    "notification_uuid": n.uuid,
                    "instance_uuid": e["server_id"],
                    "instance_name": e["server_name"],
                    "source_host": e["from_host"],
                    "dest_host": e["to_host"],
                    "start_time": when(e["started_at"]),
                    "end_time": when(e["ended_at"]),
                    "type": "evacuation",
                    "status": status,
                    "message": (e.get("detail") or {}).get("why"),
                    "created_at": when(e["started_at"]),
                    "updated_at": when(e["ended_at"]),
                    "deleted_at": None,
                    "deleted": False,
                }
            )
    return out


# -- paging (Masakari's: integer-id markers, sort keys, a limit) ----------------------


class BadPage(Exception):
    """A bad marker, sort key or direction (a 400)."""


def sort_params(
    keys: Sequence[str], dirs: Sequence[str], allowed: Sequence[str]
) -> list[tuple[str, bool]]:
    """(key, descending) pairs: ``created_at desc`` by default; a direction missing
    is the last one given."""
    keys = list(keys) or ["created_at"]
    dirs = list(dirs) or ["desc"]
    out = []
    for i, key in enumerate(keys):
        if key not in allowed:
            raise BadPage(f"Sort key supplied is invalid: {key[:64]}")
        direction = dirs[min(i, len(dirs) - 1)].lower()
        if direction not in ("asc", "desc"):
            raise BadPage(f"Unknown sort direction, must be 'desc' or 'asc': {direction[:16]}")
        out.append((key, direction == "desc"))
    return out


def page(
    items: Sequence[dict[str, Any]],
    sort: Sequence[tuple[str, bool]],
    marker: int | None,
    limit: int,
    key: Callable[[dict[str, Any], str], Any] = lambda item, name: item.get(name),
) -> list[dict[str, Any]]:
    """Sorted (``id`` breaks ties, in the first key's direction), after the item whose
    id is ``marker``, at most ``limit``. Raises BadPage for a marker not in ``items``."""
    ordered = list(items)
    first_desc = sort[0][1] if sort else False
    ordered.sort(key=lambda i: i["id"], reverse=first_desc)
    for name, desc in reversed(list(sort)):
        present = [i for i in ordered if key(i, name) is not None]
        absent = [i for i in ordered if key(i, name) is None]
        present.sort(key=lambda i, n=name: key(i, n), reverse=desc)  # type: ignore[misc]
        ordered = present + absent if not desc else absent + present
    if marker is not None:
        at = next((n for n, i in enumerate(ordered) if i["id"] == marker), None)
        if at is None:
            raise BadPage(f"Marker {marker} could not be found.")
        ordered = ordered[at + 1 :]
    return ordered[:limit]


def row_dict(row: Any) -> dict[str, Any]:
    """A row as a dict, its times as epoch seconds: what ``page`` sorts."""
    return {k: (_stamp(v) if isinstance(v, datetime) else v) for k, v in asdict(row).items()}

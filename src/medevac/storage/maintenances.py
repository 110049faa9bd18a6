"""Planned maintenances and their servers: the operator's and the owners' view of one.

Plain dicts out, one transaction per method (blocking: callers on the loop use a
thread). A maintenance's state moves only from the states each method names, checked
in the transaction that writes it, so an owner's answer and the start of the
migrations, or an end and that start, never both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medevac.storage.db import Database
from medevac.storage.models import MaintenanceRecord, MaintenanceServerRecord
from medevac.storage.records import Fence, dt, fenced_write, ts


class MaintenanceExists(Exception):
    """The host already has an open maintenance."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"{host} is already under maintenance")


class WrongState(Exception):
    """The maintenance is not in a state where this may happen."""

    def __init__(self, state: str, what: str) -> None:
        self.state = state
        super().__init__(f"the maintenance is {state}: {what}")


def _server(r: MaintenanceServerRecord) -> dict[str, Any]:
    return {
        "server_id": r.server_id,
        "name": r.server_name,
        "project_id": r.project_id,
        "ha": r.ha,
        "answer": r.answer,
        "answered_at": ts(r.answered_at),
        "answered_by": r.answered_by,
        "result": r.result,
        "to_host": r.to_host,
        "attempts": r.attempts,
        "started_at": ts(r.started_at),
        "ended_at": ts(r.ended_at),
        "detail": r.detail,
    }


def progress(servers: list[dict[str, Any]]) -> dict[str, int]:
    """How far the maintenance is, counted over its servers' results."""
    results = [s["result"] for s in servers]
    return {
        "servers": len(servers),
        "answered": sum(s["answer"] is not None for s in servers),
        "pending": results.count("pending"),  # before the deadline: nothing decided
        "queued": results.count("queued"),
        "migrating": results.count("migrating"),
        "migrated": sum(r in ("migrated", "already-moved") for r in results),
        "left": results.count("left"),
        "failed": sum(r in ("failed", "interrupted") for r in results),
    }


def _body(m: MaintenanceRecord, servers: Iterable[MaintenanceServerRecord]) -> dict[str, Any]:
    listed = [_server(s) for s in servers]
    deadline = ts(m.deadline)
    return {
        "id": m.id,
        "host": m.host,
        "state": m.state,
        "reason": m.reason,
        "deadline": dt(deadline).isoformat() if deadline is not None else None,
        "deadline_at": deadline,
        "started_at": ts(m.started_at),
        "started_by": m.started_by,
        "updated_at": ts(m.updated_at),
        "ended_at": ts(m.ended_at),
        "ended_by": m.ended_by,
        "trace_id": m.trace_id,
        "detail": m.detail,
        "progress": progress(listed),
        "servers": listed,
    }


class MaintenanceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads ----------------------------------------------------------------------

    def _load(self, s: Session, m: MaintenanceRecord) -> dict[str, Any]:
        q = (
            select(MaintenanceServerRecord)
            .where(MaintenanceServerRecord.maintenance_id == m.id)
            .order_by(MaintenanceServerRecord.id)
        )
        return _body(m, s.scalars(q))

    def get(self, maintenance_id: str) -> dict[str, Any] | None:
        with self.db.reading() as s:
            m = s.get(MaintenanceRecord, maintenance_id)
            return self._load(s, m) if m is not None else None

    def current(self, host: str) -> dict[str, Any] | None:
        """The host's open maintenance, or None."""
        with self.db.reading() as s:
            m = s.scalars(select(MaintenanceRecord).where(MaintenanceRecord.open_host == host))
            found = m.first()
            return self._load(s, found) if found is not None else None

    def latest(self, host: str) -> dict[str, Any] | None:
        """The host's open maintenance, else its last one, else None."""
        with self.db.reading() as s:
            q = (
                select(MaintenanceRecord)
                .where(MaintenanceRecord.host == host)
                .order_by(
                    MaintenanceRecord.open_host.is_(None), MaintenanceRecord.started_at.desc()
                )
                .limit(1)
            )
            found = s.scalars(q).first()
            return self._load(s, found) if found is not None else None

    def open_all(self) -> dict[str, dict[str, Any]]:
        """Every open maintenance, by host."""
        with self.db.reading() as s:
            q = select(MaintenanceRecord).where(MaintenanceRecord.open_host.is_not(None))
            return {m.host: self._load(s, m) for m in s.scalars(q)}

    # -- writes ---------------------------------------------------------------------

    def open(
        self,
        maintenance_id: str,
        host: str,
        reason: str,
        deadline: float | None,
        at: float,
        by: str,
        trace_id: str,
        fence: Fence | None = None,
    ) -> None:
        """Record a new maintenance, SCHEDULED; MaintenanceExists when the host has one
        open already (under ``fence``: only while it holds)."""

        def write(s: Session) -> None:
            s.add(
                MaintenanceRecord(
                    id=maintenance_id,
                    host=host,
                    open_host=host,
                    state="SCHEDULED",
                    reason=reason,
                    deadline=dt(deadline) if deadline is not None else None,
                    started_at=dt(at),
                    started_by=by,
                    updated_at=dt(at),
                    trace_id=trace_id,
                    detail={},
                )
            )
            s.flush()  # the unique open host speaks here, inside the fence's transaction

        try:
            fenced_write(self.db, fence, write)
        except IntegrityError:
            raise MaintenanceExists(host) from None

    def put_servers(
        self, maintenance_id: str, servers: Iterable[dict[str, Any]], fence: Fence | None = None
    ) -> None:
        """The host's servers as found at the start (``server_id``, ``name``,
        ``project_id``, ``ha``); a server recorded already is kept as it is."""

        def write(s: Session) -> None:
            q = select(MaintenanceServerRecord.server_id).where(
                MaintenanceServerRecord.maintenance_id == maintenance_id
            )
            known = set(s.scalars(q))
            for srv in servers:
                if srv["server_id"] in known:
                    continue
                s.add(
                    MaintenanceServerRecord(
                        maintenance_id=maintenance_id,
                        server_id=srv["server_id"],
                        server_name=srv["name"],
                        project_id=srv["project_id"],
                        ha=bool(srv["ha"]),
                        result="pending",
                        attempts=0,
                        detail={},
                    )
                )

        fenced_write(self.db, fence, write)

    def answer(
        self, maintenance_id: str, server_id: str, answer: str, by: str, at: float
    ) -> dict[str, Any] | None:
        """An owner's answer for one server (the last one counts); None when the server
        is not one of the maintenance's; WrongState once migrations began."""
        with self.db.session() as s:
            m = s.get(MaintenanceRecord, maintenance_id, with_for_update=True)
            if m is None:
                return None
            if m.state != "SCHEDULED":
                raise WrongState(m.state, "answers are taken until the migrations start")
            row = self._server_row(s, maintenance_id, server_id)
            if row is None:
                return None
            row.answer, row.answered_at, row.answered_by = answer, dt(at), by
            m.updated_at = dt(at)
            s.flush()
            return _server(row)

    def answers(self, maintenance_id: str) -> dict[str, str]:
        """Each answered server's answer."""
        with self.db.reading() as s:
            q = select(MaintenanceServerRecord.server_id, MaintenanceServerRecord.answer).where(
                MaintenanceServerRecord.maintenance_id == maintenance_id,
                MaintenanceServerRecord.answer.is_not(None),
            )
            return {sid: a for sid, a in s.execute(q)}

    def move(
        self,
        maintenance_id: str,
        to: str,
        at: float,
        *,
        allowed: Iterable[str],
        detail: dict[str, Any] | None = None,
        fence: Fence | None = None,
    ) -> str | None:
        """Move the maintenance to ``to`` if it is in one of ``allowed``; returns the
        state it was in, or None when it was not in one of them (nothing written)."""
        was: list[str] = []

        def write(s: Session) -> None:
            m = s.get(MaintenanceRecord, maintenance_id, with_for_update=True)
            if m is None or m.state not in set(allowed):
                return
            was.append(m.state)
            m.state, m.updated_at = to, dt(at)
            m.detail = {**(m.detail or {}), **(detail or {})}

        fenced_write(self.db, fence, write)
        return was[0] if was else None

    def end(self, maintenance_id: str, by: str, at: float, fence: Fence | None = None) -> str:
        """End the maintenance (ENDED, the host free for another one); returns the state
        it ended from. WrongState while migrations are under way, or ended already."""
        was: list[str] = []

        def write(s: Session) -> None:
            m = s.get(MaintenanceRecord, maintenance_id, with_for_update=True)
            if m is None or m.state in ("MIGRATING", "ENDED"):
                was.append(m.state if m is not None else "unknown")
                return
            was.append(m.state)
            m.state, m.updated_at, m.ended_at, m.ended_by = "ENDED", dt(at), dt(at), by
            m.open_host = None

        fenced_write(self.db, fence, write)
        if was[0] in ("MIGRATING", "ENDED", "unknown"):
            what = "migrations under way end on their own first" if was[0] == "MIGRATING" else ""
            raise WrongState(was[0], what or "nothing to end")
        return was[0]

    def completed(self, maintenance_id: str, at: float) -> bool:
        """Note that the ended maintenance's ``maintenance.complete`` is sent (its
        ``detail.completed``); True only to the first caller, so it is sent once. False
        also when the maintenance is not ENDED."""
        done: list[bool] = []

        def write(s: Session) -> None:
            m = s.get(MaintenanceRecord, maintenance_id, with_for_update=True)
            if m is None or m.state != "ENDED" or (m.detail or {}).get("completed"):
                return
            m.detail = {**(m.detail or {}), "completed": True}
            m.updated_at = dt(at)
            done.append(True)

        fenced_write(self.db, None, write)
        return bool(done)

    def set_server(
        self,
        maintenance_id: str,
        server_id: str,
        *,
        result: str,
        at: float,
        to_host: str | None = None,
        attempts: int | None = None,
        detail: dict[str, Any] | None = None,
        started: bool = False,
        ended: bool = False,
        fence: Fence | None = None,
    ) -> None:
        """What is done to one server (idempotent: a step run again writes it again)."""

        def write(s: Session) -> None:
            row = self._server_row(s, maintenance_id, server_id)
            if row is None:
                return
            row.result = result
            row.to_host = to_host or row.to_host
            if attempts is not None:
                row.attempts = attempts
            row.detail = {**(row.detail or {}), **(detail or {})}
            if started and row.started_at is None:
                row.started_at = dt(at)
            if ended:
                row.ended_at = dt(at)

        fenced_write(self.db, fence, write)

    @staticmethod
    def _server_row(
        s: Session, maintenance_id: str, server_id: str
    ) -> MaintenanceServerRecord | None:
        q = select(MaintenanceServerRecord).where(
            MaintenanceServerRecord.maintenance_id == maintenance_id,
            MaintenanceServerRecord.server_id == server_id,
        )
        return s.scalars(q).first()

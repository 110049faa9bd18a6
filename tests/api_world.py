"""A whole API over in-memory blocks, every router mounted: a host monitor with three
quiet hosts, an inspector over a recording cloud, a notifier on the test database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from medevac.api import create_app
from medevac.config import ApiToken, Role, Settings
from medevac.inspector.executor import ActionExecutor, RetryPolicy
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.inspector import Inspector
from medevac.inspector.topology import Topology
from medevac.monitor.hosts import HostMonitor
from medevac.notifier.notifier import Notifier
from medevac.recovery.maintenance import Maintenance
from medevac.storage import Database
from medevac.storage.records import AlarmStore, OutboxStore
from tests.monitor_fakes import KEY, NoNova, PowerOn, Sink
from tests.unit.test_inspector_flow import Events, RecordingCloud, Saved

HOSTS = ("h1", "h2", "h3")
OTHER_MEMBER_TOKEN = "member2-token-0123456789"  # project p2


@dataclass
class World:
    app: FastAPI
    notifier: Notifier
    monitor: HostMonitor
    cloud: RecordingCloud
    inspector: Inspector
    db: Database

    def state(self) -> dict[str, Any]:
        """Everything a request could change, to compare before and after."""
        return {
            "alarms": sorted((repr(a.as_api()) for a in self.notifier.visible_to(None)), key=str),
            "history": [repr(h) for h in self.db_history()],
            "audit": [(e.kind, e.subject, e.actor) for e in self.db.audit_events(limit=1000)],
            "hosts": {name: w.state for name, w in self.monitor.hosts.items()},
            "incidents": sorted(self.inspector.open),
            "cloud": repr(self.cloud.calls),
        }

    def db_history(self) -> list[Any]:
        return AlarmStore(self.db).history(None, None)


def with_other_member(settings: Settings) -> Settings:
    other = ApiToken(
        name="tenant2",
        token=OTHER_MEMBER_TOKEN,  # type: ignore[arg-type]
        role=Role.MEMBER,
        project_id="p2",
    )
    api = settings.api.model_copy(update={"tokens": [*settings.api.tokens, other]})
    return settings.model_copy(update={"api": api})


def build_world(settings: Settings, db: Database, maintenance: Maintenance | None = None) -> World:
    store = AlarmStore(db)
    notifier = Notifier(store, OutboxStore(db))
    monitor = HostMonitor(dict.fromkeys(HOSTS, "z"), KEY, Sink(), PowerOn(), NoNova())
    cloud = RecordingCloud()
    inspector = Inspector(
        dict.fromkeys(HOSTS, "z"),
        Topology(),
        ActionExecutor(cloud, concurrency=2, retry=RetryPolicy(attempts=1, backoff=0.001)),
        Events(cloud),
        Saved(),
        ZoneGuard(),
    )
    app = create_app(
        with_other_member(settings),
        db,
        monitor=monitor,
        inspector=inspector,
        notifier=notifier,
        maintenance=maintenance,
    )
    return World(app, notifier, monitor, cloud, inspector, db)

"""The maintenance workflow (DBOS) over a fake Nova, on SQLite and on PostgreSQL, with
``Maintenance`` starting and ending it as the API does: an end that comes while the
workflow is still disabling the host wins (the service ends enabled, no owner is told
of a maintenance already over), and the host's group is read fresh from the segments.
(The real cloud: tests/lab/test_maintenance.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest

from medevac.cloud.models import Server
from medevac.cluster.ownership import SoleController
from medevac.config import Settings
from medevac.notifier.events import Event
from medevac.recovery.groups import GroupResolver, SegmentPolicy
from medevac.recovery.maintenance import Maintenance
from medevac.recovery.maintenance_flow import (
    MaintenanceRuntime,
    MaintenanceSteps,
    MaintenanceWorkflows,
    workflow_id,
)
from medevac.recovery.policy import RecoveryMethod
from medevac.recovery.runtime import RecoveryRuntime
from medevac.storage import Database
from medevac.storage.maintenances import MaintenanceStore
from medevac.storage.records import RecoveryStore
from tests.conftest import throwaway_postgres
from tests.integration.test_workflows import FAST, dbos, result_of, server, settled, unique, until

pytestmark = pytest.mark.databases


@pytest.fixture
def workflows_url(database_kind: str, settings: Settings) -> Iterator[str]:
    if database_kind == "sqlite":
        yield settings.recovery.workflows_url(settings.storage.url)
        return
    with throwaway_postgres("medevac_dbos") as url:
        yield settings.recovery.model_copy(update={"database_url": url}).workflows_url(
            settings.storage.url
        )


class Nova:
    """A host's compute service and its servers; with ``hold``, a disable stays in
    flight until ``release`` is set."""

    def __init__(self, servers: list[Server], hold: bool = False) -> None:
        self.servers = servers
        self.hold = hold
        self.enabled = True
        self.disabling = asyncio.Event()
        self.release = asyncio.Event()

    async def set_enabled(self, host: str, enabled: bool, reason: str | None = None) -> None:
        if not enabled and self.hold:
            self.disabling.set()
            await self.release.wait()
        self.enabled = enabled

    async def list_host_servers(self, host: str) -> list[Server]:
        return [s for s in self.servers if s.host == host]

    async def get_server(self, server_id: str) -> Server:
        return next(s for s in self.servers if s.id == server_id)

    async def live_migrate(self, server_id: str, host: str | None = None) -> None:
        raise AssertionError("nothing is migrated in these tests")


class Lifecycles:
    def __init__(self) -> None:
        self.states = {"h1": "UP"}

    def state(self, host: str) -> str:
        return self.states[host]

    def move(self, host: str, started: bool, detail: dict[str, Any], trace: str | None) -> Any:
        want, to = ("UP", "MAINTENANCE") if started else ("MAINTENANCE", "UP")
        if self.states[host] != want:
            return None
        self.states[host] = to
        return to


def maintenance_on(
    db: Database, nova: Nova, lifecycles: Lifecycles, emitted: list[Event]
) -> Maintenance:
    """``Maintenance`` over its workflow, h1 in the segment ``racks`` (read from a
    store, as the controller's resolver does: nothing read yet)."""
    segment = SegmentPolicy("racks", RecoveryMethod.AUTO, True, ("h1",), ())
    runtime = RecoveryRuntime(
        cloud=nova,  # type: ignore[arg-type]
        fencer=None,  # type: ignore[arg-type]
        store=RecoveryStore(db),
        groups=GroupResolver([], lambda: [segment]),
        settings=FAST,
        emit=emitted.extend,
        audit=lambda kind, subject, detail, trace: db.record_audit(
            kind, subject, "maintenance", detail, trace
        ),
        settled=settled,
    )
    store = MaintenanceStore(db)
    name = unique("maintain")
    steps = MaintenanceSteps(
        MaintenanceRuntime(
            rt=runtime, cloud=cast(Any, nova), store=store, host_state=lifecycles.state
        ),
        name=name,
    )
    return Maintenance(
        MaintenanceWorkflows(steps, name=name),
        store,
        cast(Any, nova),
        SoleController(),
        emit=emitted.extend,
        audit=db.record_audit,
        host_state=lifecycles.state,
        lifecycle=lifecycles.move,
    )


def test_an_end_while_the_host_is_being_disabled_leaves_it_enabled_and_no_one_told_late(
    db: Database, workflows_url: str
) -> None:
    lifecycles, emitted = Lifecycles(), []  # type: ignore[var-annotated]

    async def scenario() -> Any:
        nova = Nova([server("s1")], hold=True)
        maintenance = maintenance_on(db, nova, lifecycles, emitted)
        async with dbos(workflows_url):
            body = await maintenance.start("h1", "disks", None, "ops")
            await until("the workflow asked Nova to disable h1", nova.disabling.is_set)
            ended = await maintenance.end("h1", "ops")
            assert ended["state"] == "ENDED" and ended["service_enabled"] is True
            nova.release.set()  # Nova's disable lands after the end's enable
            result = await result_of(workflow_id(body["id"]))
        return nova.enabled, result

    enabled, result = asyncio.run(scenario())
    assert result == {"state": "ENDED"}
    assert enabled is True and lifecycles.states["h1"] == "UP"
    types = [e.event_type for e in emitted]
    assert "maintenance.scheduled" not in types and types[-1] == "maintenance.complete"
    audit = [e.kind for e in reversed(db.audit_events(subject="h1"))]
    assert "maintenance.scheduled" not in audit and audit[-1] == "maintenance.ended"


def test_the_workflow_takes_the_hosts_group_from_the_segments_read_afresh(
    db: Database, workflows_url: str
) -> None:
    lifecycles, emitted = Lifecycles(), []  # type: ignore[var-annotated]

    async def scenario() -> Any:
        nova = Nova([])
        maintenance = maintenance_on(db, nova, lifecycles, emitted)
        async with dbos(workflows_url):
            body = await maintenance.start("h1", "disks", None, "ops")
            result = await result_of(workflow_id(body["id"]))
        return nova.enabled, result

    enabled, result = asyncio.run(scenario())
    assert result["state"] == "EMPTY" and enabled is False
    scheduled = [e for e in db.audit_events(subject="h1") if e.kind == "maintenance.scheduled"]
    assert [e.detail["group"] for e in scheduled] == ["segment:racks"]

"""The recovery workflows (DBOS) over a fake Nova and BMC, on SQLite and on PostgreSQL:
the store's recoveries and evacuations on the test's database, DBOS's system database
beside it (a SQLite file next to the store's, as configured by default, or a PostgreSQL
database of its own). A recovery runs its steps in order and once; one killed mid-way
resumes from its last recorded step in the next process. (The real cloud: tests/lab.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dbos import DBOS
from dbos import error as dbos_error

from medevac.cloud.models import Server
from medevac.config import Settings
from medevac.notifier.events import Event
from medevac.recovery.fence import FenceResult
from medevac.recovery.runtime import RecoveryRuntime, RecoverySettings
from medevac.recovery.starter import Recovery
from medevac.recovery.steps import RecoverySteps
from medevac.recovery.workflows import RecoveryWorkflows, configure_dbos
from medevac.storage import Database
from medevac.storage.records import RecoveryStore
from tests.conftest import throwaway_postgres, wait_for

pytestmark = pytest.mark.databases

FAST = RecoverySettings(
    poll_interval=0.02, notified_poll_interval=0.02, restart_timeout=10, evacuate_timeout=30
)
HA = {"HA_Enabled": "True"}


class FakeNova:
    """Servers on hosts. An evacuation moves its server to h2 after ``rebuild`` seconds
    (None: never, a rebuild that hangs); ``start_server`` starts a stopped one."""

    def __init__(self, servers: dict[str, Server], rebuild: float | None = 0.05) -> None:
        self.servers = servers
        self.rebuild = rebuild
        self.calls: list[tuple[str, str]] = []

    def _set(self, server_id: str, **changes: Any) -> None:
        self.servers[server_id] = replace(self.servers[server_id], **changes)

    async def set_forced_down(self, host: str, forced_down: bool = True) -> None:
        self.calls.append(("force-down", host))

    async def set_enabled(self, host: str, enabled: bool, reason: str | None = None) -> None:
        self.calls.append(("enable" if enabled else "disable", host))

    async def list_host_servers(self, host: str) -> list[Server]:
        return [s for s in self.servers.values() if s.host == host]

    async def get_server(self, server_id: str) -> Server:
        self.calls.append(("read", server_id))
        return self.servers[server_id]

    async def evacuate(
        self, server_id: str, host: str | None = None, on_shared_storage: bool = False
    ) -> None:
        self.calls.append(("evacuate", server_id))
        self._set(server_id, task_state="rebuilding")
        if self.rebuild is not None:
            asyncio.get_running_loop().call_later(
                self.rebuild, lambda: self._set(server_id, host="h2", task_state=None)
            )

    async def start_server(self, server_id: str) -> None:
        self.calls.append(("start", server_id))
        self._set(server_id, status="ACTIVE", power_state=1)

    async def list_server_ports(self, server_id: str) -> list[Any]:
        return []

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)

    def read_after_evacuating(self, server_id: str) -> bool:
        """An arrival wait has read the server: its evacuation step was recorded."""
        if ("evacuate", server_id) not in self.calls:
            return False
        asked = self.calls.index(("evacuate", server_id))
        return ("read", server_id) in self.calls[asked + 1 :]


def server(server_id: str, host: str = "h1", status: str = "ACTIVE") -> Server:
    power = 1 if status == "ACTIVE" else 4
    vm_state = "active" if status == "ACTIVE" else "stopped"
    return Server(server_id, f"vm-{server_id}", "p1", host, status, vm_state, None, power, "", HA)


class Bmc:
    def __init__(self) -> None:
        self.fenced: list[str] = []

    async def fence(self, host: str) -> FenceResult:
        self.fenced.append(host)
        return FenceResult(True, 1, 0.01, "BMC reports power off")


async def settled(server_id: str) -> None:
    return None


def workflows_on(
    db: Database,
    nova: FakeNova,
    bmc: Bmc,
    name: str,
    emitted: list[Event] | None = None,
    **extra: Any,
) -> RecoveryWorkflows:
    """The workflows over a runtime on ``db`` (its audit as the controller writes it),
    registered with DBOS as ``name``."""
    runtime = RecoveryRuntime(
        cloud=nova,  # type: ignore[arg-type]
        fencer=bmc,
        store=RecoveryStore(db),
        groups=[],
        settings=FAST,
        emit=(emitted if emitted is not None else []).extend,
        audit=lambda kind, subject, detail, trace: db.record_audit(
            kind, subject, "recovery", detail, trace
        ),
        settled=settled,
        **extra,
    )
    return RecoveryWorkflows(RecoverySteps(runtime, name=name), name=name)


@asynccontextmanager
async def dbos(system_database_url: str) -> AsyncIterator[None]:
    """DBOS launched on this loop (it resumes what a dead predecessor left), destroyed
    after, as `medevac serve` does."""
    configure_dbos(system_database_url)
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


async def result_of(workflow_id: str, within: float = 30) -> Any:
    """The workflow's result, once ``Recovery`` has started it (in a task of its own)."""
    deadline = time.monotonic() + within
    while True:
        try:
            handle = await DBOS.retrieve_workflow_async(workflow_id)
            break
        except dbos_error.DBOSNonExistentWorkflowError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(handle.get_result(), max(0.1, deadline - time.monotonic()))


async def until(what: str, check: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def workflows_url(database_kind: str, settings: Settings) -> Iterator[str]:
    """DBOS's system database: the default beside a SQLite store, or a PostgreSQL
    database of its own (``recovery.database_url``)."""
    if database_kind == "sqlite":
        yield settings.recovery.workflows_url(settings.storage.url)
        return
    with throwaway_postgres("medevac_dbos") as url:
        yield settings.recovery.model_copy(update={"database_url": url}).workflows_url(
            settings.storage.url
        )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_host_recovery_fences_then_evacuates_each_server_once_and_records_every_step(
    db: Database, workflows_url: str
) -> None:
    nova = FakeNova({sid: server(sid) for sid in ("s1", "s2")} | {"s3": server("s3", "h3")})
    bmc = Bmc()
    emitted: list[Event] = []
    store = RecoveryStore(db)

    async def scenario() -> None:
        recovery = Recovery(workflows_on(db, nova, bmc, unique("recover"), emitted))
        async with dbos(workflows_url):
            rid = recovery.start("i1", "h1", "HOST_DOWN", {}, "trace-1")
            # Started again (a second verdict, the inspector resumed): the same one.
            assert recovery.start("i1", "h1", "HOST_DOWN", {}, "trace-1") == rid
            result = await result_of(rid)
        assert result == {"state": "COMPLETED", "evacuated": 2, "failed": []}

    asyncio.run(scenario())
    assert bmc.fenced == ["h1"]
    kinds = [k for k, _ in nova.calls if k != "read"]
    assert kinds[0] == "force-down" and kinds[-1] == "disable"  # fenced before both
    assert sorted(kinds[1:-1]) == ["evacuate", "evacuate"]  # each server once, not s3
    rec = store.get("recover-i1")
    assert rec is not None and rec["state"] == "COMPLETED" and rec["ended_at"] is not None
    moved = {(e["server_id"], e["result"], e["to_host"]) for e in rec["evacuations"]}
    assert moved == {("s1", "recovered", "h2"), ("s2", "recovered", "h2")}
    audit = [e.kind for e in reversed(db.audit_events(subject="h1"))]
    assert audit == [
        "recovery.started",
        "recovery.fencing",
        "recovery.fenced",
        "recovery.evacuating",
        "recovery.completed",
    ]
    assert all(e.trace_id == "trace-1" for e in db.audit_events(subject="h1"))
    types = [e.event_type for e in emitted]
    assert types[0] == "compute.host.recovery.started"
    assert types[-1] == "compute.host.recovery.completed"
    assert types.count("compute.instance.evacuated") == 2


def test_a_server_and_a_nova_compute_are_restarted_where_they_are(
    db: Database, workflows_url: str
) -> None:
    nova = FakeNova({"s1": server("s1", status="SHUTOFF")})
    restarts: list[str] = []

    def restart_compute(host: str) -> bool:
        restarts.append(host)
        return True

    async def scenario() -> tuple[Any, Any]:
        workflows = workflows_on(
            db,
            nova,
            Bmc(),
            unique("restart"),
            restart_compute=restart_compute,
            compute_alive=lambda host: host in restarts,
        )
        recovery = Recovery(workflows)
        async with dbos(workflows_url):
            ids = [
                recovery.restart("i2", "h1", "s1", "t2"),
                recovery.restart_compute("i3", "h1", "t3"),
            ]
            done = await asyncio.gather(*(result_of(rid) for rid in ids))
        return done[0], done[1]

    server_done, compute_done = asyncio.run(scenario())
    assert server_done == {"state": "COMPLETED", "attempts": 1}
    assert compute_done == {"state": "COMPLETED", "attempts": 1}
    assert nova.count("start") == 1 and restarts == ["h1"]
    store = RecoveryStore(db)
    assert [r["state"] for r in store.recent(host="h1")] == ["COMPLETED", "COMPLETED"]


CRASHING = textwrap.dedent(
    """
    import asyncio, sys
    from tests.integration.test_workflows import evacuate_then_hang

    asyncio.run(evacuate_then_hang(*sys.argv[1:]))
    """
)


async def evacuate_then_hang(storage_url: str, workflows_url: str, name: str, flag: str) -> None:
    """In a process of its own: h1's recovery up to the servers' evacuations asked and
    recorded, whose rebuilds then hang; ``flag`` says so (with the calls made)."""
    db = Database(storage_url)
    nova = FakeNova({sid: server(sid) for sid in ("s1", "s2")}, rebuild=None)
    bmc = Bmc()
    recovery = Recovery(workflows_on(db, nova, bmc, name))
    async with dbos(workflows_url):
        recovery.start("i1", "h1", "HOST_DOWN", {}, "trace-1")
        await until(
            "both evacuations recorded",
            lambda: all(nova.read_after_evacuating(s) for s in ("s1", "s2")),
        )
        said = json.dumps({"calls": nova.calls, "fenced": bmc.fenced})
        await asyncio.to_thread(Path(flag).write_text, said)
        await asyncio.sleep(3600)


def test_a_recovery_killed_mid_evacuation_resumes_from_its_last_step_on_restart(
    db: Database, workflows_url: str, tmp_path: Path
) -> None:
    """SIGKILL once both servers' evacuations were asked and recorded: the next
    controller's DBOS resumes the recovery; nothing done before (fencing, force-down,
    the evacuate calls) is done again, the arrivals are awaited and it completes."""
    name = unique("resume")
    flag = tmp_path / "evacuating"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING, str(db.url), workflows_url, name, str(flag)],
        # The tests and the same medevac as this process's (a checkout's src first).
        env={**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])},
    )
    try:
        wait_for("the first controller to have evacuations under way", flag.exists, 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    before = json.loads(flag.read_text())
    assert before["fenced"] == ["h1"]
    assert sorted(target for kind, target in before["calls"] if kind == "evacuate") == ["s1", "s2"]
    store = RecoveryStore(db)
    killed = store.get("recover-i1")
    assert killed is not None and killed["state"] == "EVACUATING"

    # Meanwhile Nova finished the rebuilds: the servers run on h2.
    nova = FakeNova({sid: server(sid, "h2") for sid in ("s1", "s2")})
    bmc = Bmc()

    async def restart() -> None:
        workflows_on(db, nova, bmc, name)  # as the controller builds them before launch
        async with dbos(workflows_url):  # resumes recover-i1
            result = await result_of("recover-i1")
        assert result == {"state": "COMPLETED", "evacuated": 2, "failed": []}

    asyncio.run(restart())
    assert bmc.fenced == [] and nova.count("force-down") == 0 and nova.count("evacuate") == 0
    assert nova.count("disable") == 1
    rec = store.get("recover-i1")
    assert rec is not None and rec["state"] == "COMPLETED"
    # "recovered", not "already-moved": the evacuate steps' recorded answers were replayed.
    moved = {(e["server_id"], e["result"], e["to_host"]) for e in rec["evacuations"]}
    assert moved == {("s1", "recovered", "h2"), ("s2", "recovered", "h2")}
    audit = [e.kind for e in reversed(db.audit_events(subject="h1"))]
    assert audit.count("recovery.fenced") == 1 and audit[-1] == "recovery.completed"

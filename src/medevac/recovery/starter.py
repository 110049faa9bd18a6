"""Starts recoveries from the inspector's incidents, idempotently: each workflow's id
is derived from its incident, so a second start finds the first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from dbos import DBOS, SetWorkflowID

from medevac.recovery.policy import group_of, order_key
from medevac.recovery.workflows import RecoveryWorkflows

log = logging.getLogger(__name__)


class Described(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...


S = TypeVar("S", bound=Described)


class Recovery:
    """The inspector's ``RecoveryStarter`` over one set of workflows."""

    def __init__(self, workflows: RecoveryWorkflows) -> None:
        self.workflows = workflows
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = 0

    def start(
        self, incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
    ) -> str:
        """Start (or find) the recovery of this incident; returns its id at once."""
        wf = self.workflows.recover_host
        return self._start(
            f"recover-{incident_id}", wf, incident_id, host, verdict, before, trace_id
        )

    def order(self, host: str, servers: list[S]) -> list[S]:
        """The host's servers in the order its recovery will evacuate them."""
        group = group_of(host, self.workflows.groups)
        return sorted(servers, key=lambda s: order_key(s.metadata, s.name, s.id, group))

    def restart(self, incident_id: str, host: str, server_id: str, trace_id: str) -> str:
        """Start (or find) the restart of a server whose domain died."""
        wf = self.workflows.recover_server
        rid = f"restart-{incident_id}-{server_id}"
        return self._start(rid, wf, incident_id, host, server_id, trace_id)

    def restart_compute(self, incident_id: str, host: str, trace_id: str) -> str:
        """Start (or find) the restart of a host's dead nova-compute."""
        wf = self.workflows.recover_compute
        return self._start(f"compute-{incident_id}", wf, incident_id, host, trace_id)

    def _start(
        self, rid: str, workflow: Callable[..., Coroutine[Any, Any, dict[str, Any]]], *args: Any
    ) -> str:
        async def go() -> None:
            with SetWorkflowID(rid):
                await DBOS.start_workflow_async(workflow, *args)

        task = asyncio.ensure_future(go())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self.started += 1
        return rid

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cannot start a recovery", exc_info=task.exception())

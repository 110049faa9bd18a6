"""Starts recoveries from the inspector's incidents, idempotently: each workflow's id
is derived from its incident, so a second start finds the first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from dbos import DBOS, SetWorkflowID

from medevac.recovery.policy import order_key
from medevac.recovery.workflows import RecoveryWorkflows, takeover_queue

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

    def __init__(
        self,
        workflows: RecoveryWorkflows,
        member_id: str | None = None,
        durable: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.workflows = workflows
        # Waits until the incident is in the store (False: refused): a recovery starts
        # only then, so that none ever exists without its incident.
        self.durable = durable
        # Several controllers: recoveries taken over go to this controller's own queue.
        self.queue = takeover_queue(member_id) if member_id is not None else None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = 0
        self.taken_over = 0

    async def launched(self) -> None:
        """After DBOS launched: the queue recoveries taken over wait in, polled often
        (a takeover is on the recovery's path)."""
        if self.queue is not None:
            await DBOS.register_queue_async(self.queue, polling_interval_sec=0.1)

    async def recorded(self, recovery_id: str) -> bool:
        """Whether the workflow store has this recovery (started, by any controller)."""
        return await DBOS.get_workflow_status_async(recovery_id) is not None

    async def take_over(self, recovery_ids: Iterable[str]) -> list[str]:
        """Resume, on this controller, the recoveries (and their servers' evacuations)
        that another executor left pending: their hosts are this controller's now,
        under a new epoch, so whatever the previous owner still runs of them stands
        down at its next step. Returns the workflows resumed."""
        assert self.queue is not None, "a single controller resumes its own at launch"
        me = DBOS.executor_id
        resumed: list[str] = []
        for rid in recovery_ids:
            pending = await DBOS.list_workflows_async(
                workflow_id_prefix=rid,
                status=["PENDING", "ENQUEUED"],
                load_input=False,
                load_output=False,
            )
            for wf in pending:
                mine = wf.executor_id == me and wf.status == "PENDING"
                if mine and not self.workflows.steps.rt.stale_here(wf.workflow_id):
                    continue  # running here, under the epoch this controller holds now
                await DBOS.resume_workflow_async(wf.workflow_id, queue_name=self.queue)
                resumed.append(wf.workflow_id)
        self.taken_over += len(resumed)
        if resumed:
            log.warning("took over %d recovery workflows: %s", len(resumed), ", ".join(resumed))
        return resumed

    def start(
        self, incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
    ) -> str:
        """Start (or find) the recovery of this incident; returns its id at once."""
        wf = self.workflows.recover_host
        return self._start(
            f"recover-{incident_id}", wf, incident_id, host, verdict, before, trace_id
        )

    def retry(
        self,
        incident_id: str,
        attempt: int,
        host: str,
        verdict: str,
        before: dict[str, str],
        trace_id: str,
    ) -> str:
        """Start (or find) the ``attempt``-th retry of this incident's recovery, after
        the previous one ended; its id comes from both, so a retry asked twice is one.
        The servers' states before the fault are the first recovery's (``before`` only
        when the workflow store no longer has it): by now the inspector has reset them."""
        first = f"recover-{incident_id}"
        rid = f"{first}-retry{attempt}"

        async def with_first_states() -> tuple[Any, ...]:
            found = await DBOS.list_workflows_async(workflow_ids=[first], load_input=True)
            inputs = found[0].input if found else None
            recorded = inputs["args"][3] if inputs and len(inputs["args"]) > 3 else None
            states = recorded if isinstance(recorded, dict) else before
            return (incident_id, host, verdict, states, trace_id)

        return self._launch(rid, self.workflows.recover_host, with_first_states)

    def order(self, host: str, servers: list[S]) -> list[S]:
        """The host's servers in the order its recovery will evacuate them."""
        group = self.workflows.groups.group_of(host)
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
        async def given() -> tuple[Any, ...]:
            return args

        return self._launch(rid, workflow, given)

    def _launch(
        self,
        rid: str,
        workflow: Callable[..., Coroutine[Any, Any, dict[str, Any]]],
        arguments: Callable[[], Awaitable[tuple[Any, ...]]],
    ) -> str:
        """Start ``workflow`` as ``rid`` with ``arguments()`` once its incident (the
        first argument) is durable; returns ``rid`` at once."""

        async def go() -> None:
            args = await arguments()
            incident_id = str(args[0])
            if self.durable is not None and not await self.durable(incident_id):
                log.warning("%s not started: the store refused incident %s", rid, incident_id)
                return
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

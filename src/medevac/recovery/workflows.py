"""Host recovery as durable workflows (DBOS): fence, force down, evacuate, verify,
disable, record. A controller that dies mid-recovery resumes it on restart from the
last completed step. One recovery per incident by construction: the workflow id is
``recover-<incident id>``, and each server's evacuation is a child workflow whose id
is ``<recovery id>:<server id>``.

This module only sequences: the decisions are ``policy``'s pure functions, the
effects ``steps``' one-call steps. DBOS keeps workflows in its own system database;
the ``recoveries`` and ``evacuations`` tables are the operator's view of them.
"""

from __future__ import annotations

import uuid
from typing import Any

from dbos import DBOS, DBOSConfig, DBOSConfiguredInstance, SetWorkflowID

from medevac.recovery.policy import (
    AfterFencing,
    Level,
    ServerAction,
    ServerFacts,
    after_fencing,
    destinations,
    must_fence,
    plan,
    server_action,
)
from medevac.recovery.steps import RecoverySteps

# Bump when a change to the workflows below would not replay an older recording.
APP_VERSION = "medevac-recovery-4"


@DBOS.dbos_class()
class RecoveryWorkflows(DBOSConfiguredInstance):
    """The workflows over one set of steps; ``name`` identifies them to DBOS, which
    finds them by it when it resumes a workflow after a restart."""

    def __init__(self, steps: RecoverySteps, name: str = "medevac") -> None:
        self.steps = steps
        self.groups = steps.rt.host_groups
        super().__init__(config_name=name)

    @DBOS.workflow()
    async def recover_host(
        self, incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
    ) -> dict[str, Any]:
        st = self.steps
        rid = str(DBOS.workflow_id)
        st.rt.pin(rid, host)
        # Segments decide only where servers go (given to each server's workflow when it
        # starts) and the configuration the rest: a replay after an edit of a segment
        # takes the same steps.
        group = await self.groups.fresh(host)
        level = group.level
        common = {"host": host, "recovery_id": rid, "level": int(level), "group": group.name}

        async def record(state: str, detail: dict[str, Any], ended: bool = False) -> None:
            await st.record(rid, incident_id, host, int(level), state, detail, ended, trace_id)

        await record("STARTED", {"verdict": verdict, "group": group.name})
        await st.event("compute.host.recovery.started", common, "moderate", trace_id)
        if must_fence(level, verdict):
            await record("FENCING", {})
            fenced = await st.fence(host)
            if after_fencing(fenced["confirmed"]) is AfterFencing.HOLD:
                await st.force_down(host)  # it stays down, for an operator
                await record("FENCING_FAILED", {"fencing": fenced}, ended=True)
                reason = {**common, "reason": fenced["detail"]}
                await st.event("compute.host.recovery.fencing_failed", reason, "critical", trace_id)
                return {"state": "FENCING_FAILED", "fencing": fenced}
            await record("FENCED", {"fencing": fenced, "fenced_at": fenced["ended_at"]})
        elif level is Level.FORCE_DOWN_ONLY:
            why = {**common, "reason": "level 1: evacuating without fencing, as configured"}
            await st.event("compute.host.recovery.unfenced", why, "critical", trace_id)
        if level is Level.NOVA_SEES_DOWN:
            if not await st.wait_nova_down(host):
                await record("NOVA_NEVER_SAW_DOWN", {}, ended=True)
                return {"state": "NOVA_NEVER_SAW_DOWN"}
        else:
            await st.force_down(host)
        servers = [ServerFacts(**s) for s in await st.snapshot(host, before)]
        planned = plan(servers, group)
        dests = destinations(group, host)
        where = [d or "scheduler" for d in dests]
        await record(
            "EVACUATING", {"planned": [p.server_id for p in planned], "destinations": where}
        )
        handles = []
        for p in planned:  # all at once, in priority order; each waits for a group slot
            server = {
                "server_id": p.server_id,
                "name": p.name,
                "expected_status": p.expected_status,
                "project_id": p.project_id,
            }
            with SetWorkflowID(f"{rid}:{p.server_id}"):
                handles.append(
                    await DBOS.start_workflow_async(
                        self.evacuate_server,
                        rid,
                        host,
                        server,
                        dests,
                        group.on_shared_storage,
                        st.rt.settings.evacuate_attempts,
                        trace_id,
                    )
                )
        results: list[dict[str, Any]] = [await h.get_result() for h in handles]
        await st.disable(host, f"medevac: recovered from {verdict} (incident {incident_id})")
        failed = [x["server_id"] for x in results if not x["ok"]]
        state = "COMPLETED" if not failed else "PARTIAL"
        summary = {"evacuated": len(results) - len(failed), "failed": failed}
        await record(state, summary, ended=True)
        await st.event(
            "compute.host.recovery.completed",
            {**common, "state": state, "evacuated": summary["evacuated"], "failed": len(failed)},
            "moderate" if not failed else "critical",
            trace_id,
        )
        return {"state": state, **summary}

    @DBOS.workflow()
    async def evacuate_server(
        self,
        recovery_id: str,
        failed_host: str,
        server: dict[str, Any],
        dests: list[str | None],
        shared: bool,
        attempts_per: int,
        trace_id: str,
    ) -> dict[str, Any]:
        st = self.steps
        st.rt.pin(str(DBOS.workflow_id), failed_host)
        sid, name = server["server_id"], server["name"]
        # Every server's evacuation starts at once and waits here for one of its group's
        # slots, first come first served: a window that moves on as each one ends, in
        # the plan's order (the parent starts them in it), never a batch waiting for its
        # slowest.
        async with st.rt.slots(self.groups.group_of(failed_host)):
            await st.settle(sid)  # the inspector's reset and port updates on it land first
            await st.record_evacuation(
                recovery_id, sid, name, failed_host, "running", None, 0, {}, False
            )
            moved = await self._move(
                sid, failed_host, server["expected_status"], dests, shared, attempts_per
            )
            await st.record_evacuation(
                recovery_id,
                sid,
                name,
                failed_host,
                moved["result"],
                moved["to"],
                moved["attempts"],
                moved["detail"],
                True,
            )
        # Out of the slot: the next evacuation need not wait for this one's ports.
        ok = moved["result"] != "failed"
        traits = {
            "instance_id": sid,
            "project_id": server["project_id"],
            "from_host": failed_host,
            "result": moved["result"],
            "recovery_id": recovery_id,
        }
        if ok:
            await st.ports_up(sid, failed_host)
            traits["to_host"] = moved["to"]
            outcome = {"to": moved["to"], "result": moved["result"]}
        else:
            traits["why"] = moved["detail"]["why"]
            outcome = {"why": moved["detail"]["why"]}
        severity = "moderate" if ok else "critical"
        await st.event("compute.instance.evacuated", traits, severity, trace_id)
        return {"server_id": sid, "ok": ok, **outcome}

    async def _move(
        self,
        server_id: str,
        failed_host: str,
        expected_status: str,
        dests: list[str | None],
        shared: bool,
        attempts_per_destination: int,
    ) -> dict[str, Any]:
        """Evacuate, each destination in turn, until the server runs elsewhere in its
        expected state; returns the history row's result, destination, attempts, detail."""
        st = self.steps
        attempts = 0
        why = "no destination"
        for dest in dests:
            for _ in range(attempts_per_destination):
                attempts += 1
                outcome = await st.evacuate(server_id, failed_host, dest, shared)
                if outcome == "service-in-use":
                    why = "Nova says the source compute service is still up"
                    break
                if outcome == "conflict":
                    await DBOS.sleep_async(1.0)  # durable: a task runs on it, look again
                    continue
                arrived = await st.arrival(server_id, failed_host, expected_status)
                if arrived["ok"]:
                    return {
                        "result": "already-moved" if outcome == "moved" else "recovered",
                        "to": arrived["host"],
                        "attempts": attempts,
                        "detail": {
                            "destination": dest or "scheduler",
                            "reads": arrived["reads"],
                            "woken_by_nova": arrived["woken_by_nova"],
                        },
                    }
                why = arrived.get("why", "unknown")
        return {"result": "failed", "to": None, "attempts": attempts, "detail": {"why": why}}

    @DBOS.workflow()
    async def recover_server(
        self, incident_id: str, host: str, server_id: str, trace_id: str
    ) -> dict[str, Any]:
        """SERVER_DOWN: restart the server where it is (start or hard reboot), confirm it
        runs, a bounded number of times; then say it could not."""
        st = self.steps
        rid = str(DBOS.workflow_id)
        st.rt.pin(rid, host)
        facts = await st.server_facts(server_id)
        action, _ = server_action(facts["metadata"], await self.groups.fresh(host))
        traits = {"instance_id": server_id, "host": host, "recovery_id": rid}

        async def record(state: str, detail: dict[str, Any], ended: bool) -> None:
            await st.record(rid, incident_id, host, 0, state, detail, ended, trace_id)

        if action is ServerAction.NONE:
            why = {"server_id": server_id, "why": "the server's policy says none"}
            await record("SKIPPED", why, True)
            return {"state": "SKIPPED"}
        await record("RESTARTING", {"server_id": server_id}, False)
        attempts = st.rt.settings.restart_attempts
        running: dict[str, Any] = {}
        for attempt in range(1, attempts + 1):
            outcome = await st.restart_attempt(host, server_id)
            running = await st.running(server_id)
            if running["ok"]:
                detail = {"server_id": server_id, "attempts": attempt, "outcome": outcome}
                await record("COMPLETED", detail, True)
                await st.event("compute.instance.restarted", traits, "moderate", trace_id)
                return {"state": "COMPLETED", "attempts": attempt}
        await record(
            "FAILED", {"server_id": server_id, "attempts": attempts, "last": running}, True
        )
        await st.event("compute.instance.recovery.failed", traits, "critical", trace_id)
        return {"state": "FAILED"}

    @DBOS.workflow()
    async def recover_compute(self, incident_id: str, host: str, trace_id: str) -> dict[str, Any]:
        """COMPUTE_PROCESS_DOWN on a live host: the inspector disabled the service;
        restart nova-compute through the host's agent, a bounded number of times, then
        say so. Never an evacuation: the host and its servers are fine."""
        st = self.steps
        rid = str(DBOS.workflow_id)
        st.rt.pin(rid, host)
        traits = {"host": host, "binary": "nova-compute", "recovery_id": rid}
        await st.record(rid, incident_id, host, 0, "RESTARTING_COMPUTE", {}, False, trace_id)
        attempts = st.rt.settings.compute_restart_attempts
        last: dict[str, Any] = {}
        for attempt in range(1, attempts + 1):
            last = await st.compute_restart(host)
            if last["ok"]:
                done: dict[str, Any] = {"attempts": attempt}
                await st.record(rid, incident_id, host, 0, "COMPLETED", done, True, trace_id)
                await st.event("compute.service.restarted", traits, "moderate", trace_id)
                return {"state": "COMPLETED", "attempts": attempt}
        detail = {"attempts": attempts, "why": last.get("why")}
        await st.record(rid, incident_id, host, 0, "FAILED", detail, True, trace_id)
        await st.event("compute.service.restart_failed", traits, "critical", trace_id)
        return {"state": "FAILED"}


def takeover_queue(member_id: str) -> str:
    """The queue only ``member_id`` dequeues from: recoveries it takes over."""
    return f"medevac-takeover-{member_id}"


def configure_dbos(system_database_url: str, member_id: str | None = None) -> None:
    """DBOS for one controller. With several (``member_id`` set), each process has an
    executor id of its own boot: DBOS's start-up recovery then never resumes what a
    previous boot left, since that may be another controller's now; recoveries move
    only by ``Recovery.take_over``, onto this controller's own queue."""
    config: DBOSConfig = {
        "name": "medevac",
        "system_database_url": system_database_url,
        "application_version": APP_VERSION,
        "log_level": "WARNING",
    }
    if member_id is not None:
        config["executor_id"] = f"{member_id}.{uuid.uuid4().hex[:8]}"
    DBOS(config=config)
    if member_id is not None:
        DBOS.listen_queues([takeover_queue(member_id)])

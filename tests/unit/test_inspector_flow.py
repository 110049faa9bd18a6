"""The inspector's orchestration over a recording cloud: events first, failures told,
holds respected, retries bounded. (The real cloud is exercised in tests/lab.)"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest

from medevac.cloud.errors import CloudError, CloudUnavailable, Forbidden
from medevac.cloud.models import DataPlaneStatus
from medevac.inspector.actions import Action, ActionKind
from medevac.inspector.executor import ActionExecutor, RetryPolicy
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.incidents import Incident, IncidentState, ServiceView
from medevac.inspector.inspector import Inspector
from medevac.inspector.lifecycle import Happening, HostState
from medevac.inspector.topology import PortInfo, ServerInfo, Topology
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.notifier.events import Event


class RecordingCloud:
    def __init__(self, failures: dict[str, list[Exception]] | None = None) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.failures = failures or {}
        self.in_flight = 0
        self.peak = 0

    async def _do(self, kind: str, target: str, value: Any) -> None:
        self.calls.append((kind, target, value))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            queue = self.failures.get(target)
            if queue:
                raise queue.pop(0)
        finally:
            self.in_flight -= 1

    async def set_forced_down(self, host: str, forced_down: bool = True) -> None:
        await self._do("force-down", host, forced_down)

    async def reset_state(self, server_id: str, state: str = "error") -> None:
        await self._do("reset", server_id, state)

    async def set_data_plane_status(self, port_id: str, status: DataPlaneStatus | None) -> None:
        await self._do("port", port_id, status)

    async def set_enabled(self, host: str, enabled: bool, reason: str | None = None) -> None:
        await self._do("enable" if enabled else "disable", host, reason)


class Starter:
    def __init__(self) -> None:
        self.started: list[tuple[str, str, dict[str, str]]] = []
        self.retried: list[tuple[str, int]] = []

    def retry(
        self,
        incident_id: str,
        attempt: int,
        host: str,
        verdict: str,
        before: dict[str, str],
        trace_id: str,
    ) -> str:
        self.retried.append((host, attempt))
        return f"recover-{incident_id}-retry{attempt}"

    def start(
        self, incident_id: str, host: str, verdict: str, before: dict[str, str], trace_id: str
    ) -> str:
        self.started.append((host, verdict, before))
        return f"recover-{incident_id}"

    def restart(self, incident_id: str, host: str, server_id: str, trace_id: str) -> str:
        return f"restart-{incident_id}-{server_id}"

    def order(self, host: str, servers: list[ServerInfo]) -> list[ServerInfo]:
        return sorted(servers, key=lambda s: s.id, reverse=True)  # s2 first


class Events:
    def __init__(self, cloud: RecordingCloud) -> None:
        self.cloud = cloud
        self.events: list[Event] = []
        self.calls_before_first_event: int | None = None
        self.prepared: list[tuple[str, str]] = []

    def emit(self, events: Iterable[Event], **_: Any) -> int:
        if self.calls_before_first_event is None:
            self.calls_before_first_event = len(self.cloud.calls)
        self.events.extend(events)
        return 0

    def prepare(self, resources: Iterable[tuple[str, str]]) -> None:
        self.prepared.extend(resources)

    async def sent(self, within: float) -> bool:
        return True

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]


class Saved:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def save(self, incident: Incident) -> None:
        self.saved.append(incident.as_dict())

    async def durable(self, incident_id: str) -> bool:
        return True


def build(
    cloud: RecordingCloud, guard: ZoneGuard | None = None, hosts: int = 10
) -> tuple[Inspector, Events]:
    topo = Topology()
    topo.replace(
        [ServerInfo(f"s{i}", f"s{i}", "p1", "h1", "active", None, {}) for i in range(3)]
        + [ServerInfo("gone", "gone", "p1", "h1", "deleted", None, {})],
        [
            PortInfo("a", "p1", "s0", "h1", "n1", "physnet1", None),
            PortInfo("b", "p1", "s1", "h1", "n2", "physnet2", DataPlaneStatus.ACTIVE),
        ],
        at=0,
    )
    events = Events(cloud)
    inspector = Inspector(
        {f"h{i}": "z" for i in range(1, hosts + 1)},
        topo,
        ActionExecutor(cloud, concurrency=2, retry=RetryPolicy(attempts=3, backoff=0.001)),
        events,
        Saved(),
        guard or ZoneGuard(),
    )
    inspector.resume()  # as the controller does once the topology is loaded
    return inspector, events


def sync(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on its own event loop."""

    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(fn())

    return run


def verdict(kind: VerdictKind, host: str = "h1", subject: str | None = None) -> Verdict:
    now = time.time()
    return Verdict(kind, host, now, {"raw_received_at": now - 0.05}, subject)


@sync
async def test_host_down_tells_consumers_before_any_cloud_call() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    assert events.calls_before_first_event == 0
    await inspector.drain()
    assert sorted(c[0] for c in cloud.calls) == [
        "force-down",
        "port",
        "port",
        "reset",
        "reset",
        "reset",
    ]
    assert "gone" not in {c[1] for c in cloud.calls}
    assert cloud.peak <= 2  # the executor's bound
    inc = inspector.open["h1"]
    assert inc.state is IncidentState.CORRECTED
    assert {"T01", "T02", "T03", "T04", "T05", "T06"} <= set(inc.stamps)
    assert events.types().count("compute.instance.update") == 4


def test_a_suspected_host_readies_the_webhooks_of_its_servers_ports_and_itself() -> None:
    inspector, events = build(RecordingCloud())
    inspector.prepare("h1")
    assert sorted(events.prepared) == [
        ("host", "h1"),
        ("instance_id", "gone"),
        ("instance_id", "s0"),
        ("instance_id", "s1"),
        ("instance_id", "s2"),
        ("port_id", "a"),
        ("port_id", "b"),
    ]


@sync
async def test_repeated_verdicts_act_once() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    for kind in (VerdictKind.HOST_UNREACHABLE, VerdictKind.HOST_DOWN, VerdictKind.HOST_UNREACHABLE):
        inspector.on_verdict(verdict(kind))
    await inspector.drain()
    assert [c for c in cloud.calls if c[0] == "force-down"] == [("force-down", "h1", True)]
    assert len(inspector.open) == 1


@sync
async def test_transient_errors_are_retried_and_permanent_ones_become_events() -> None:
    cloud = RecordingCloud(
        {"s0": [CloudUnavailable("busy")], "s1": [Forbidden("no role"), Forbidden("no role")]}
    )
    inspector, events = build(cloud)
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    await inspector.drain()
    assert [c[1] for c in cloud.calls].count("s0") == 2  # retried, then fine
    assert [c[1] for c in cloud.calls].count("s1") == 1  # 403 is not retried
    failed = [e for e in events.events if e.event_type == "medevac.action.failed"]
    assert [e.traits["instance_id"] for e in failed] == ["s1"]
    assert failed[0].severity == "critical"
    assert inspector.open["h1"].state is IncidentState.PARTIAL


@sync
async def test_held_zone_changes_nothing_and_says_so_once() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud, ZoneGuard(fraction=0.5, window=60, min_hosts=3), hosts=4)
    for host in ("h1", "h2", "h3", "h4"):
        inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE, host))
    await inspector.drain()
    # The first two were admitted (two of four is below the three-host floor).
    assert {c[1] for c in cloud.calls if c[0] == "force-down"} == {"h1", "h2"}
    assert [inspector.open[h].state for h in ("h3", "h4")] == [IncidentState.HELD] * 2
    assert events.types().count("medevac.guard.hold") == 1


@sync
async def test_observer_isolation_holds_every_later_host() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    inspector.on_verdict(Verdict(VerdictKind.OBSERVER_ISOLATED, "z", 1.0, {"silent_hosts": ["h1"]}))
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    await inspector.drain()
    assert cloud.calls == []
    assert events.types() == ["medevac.guard.hold"]


@sync
async def test_link_down_only_that_physnet_then_back() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.on_verdict(verdict(VerdictKind.LINK_DOWN, subject="physnet2"))
    await inspector.drain()
    assert cloud.calls == [("port", "b", DataPlaneStatus.DOWN)]
    inspector.on_verdict(verdict(VerdictKind.LINK_UP, subject="physnet2"))
    await inspector.drain()
    assert cloud.calls[-1] == ("port", "b", DataPlaneStatus.ACTIVE)
    assert "h1" not in inspector.open  # healed and closed


@sync
async def test_host_up_restores_ports_after_the_correction_finished() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    inspector.on_verdict(verdict(VerdictKind.HOST_UP))  # before the correction ran
    await inspector.drain()
    ports = [c for c in cloud.calls if c[0] == "port"]
    assert [p[2] for p in ports] == [DataPlaneStatus.DOWN] * 2 + [DataPlaneStatus.ACTIVE] * 2
    assert "compute.host.up" in events.types()
    # Force-down stays: releasing a host is the recovery's decision, not the inspector's.
    assert not [c for c in cloud.calls if c[0] == "force-down" and c[2] is False]


@sync
async def test_an_evacuated_servers_ports_go_back_once_and_only_its_own() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    assert await inspector.restore_server_ports("h1", "s0") is None  # no incident: ask Neutron
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    await inspector.drain()
    cloud.calls.clear()
    # s0's port was unset before the fault: back as ACTIVE (Neutron cannot unset it)
    assert await inspector.restore_server_ports("h1", "s0") == 1
    assert cloud.calls == [("port", "a", DataPlaneStatus.ACTIVE)]
    assert await inspector.restore_server_ports("h1", "s2") == 0  # s2 has no port
    # A port that cannot be put back is an error for the caller and an event.
    cloud.failures["b"] = [Forbidden("policy")]
    with pytest.raises(CloudError, match="ports of s1 not put back: b"):
        await inspector.restore_server_ports("h1", "s1")
    assert "medevac.action.failed" in events.types()
    # The host's return puts back only what is still DOWN: s1's port, not s0's again.
    cloud.calls.clear()
    inspector.on_verdict(verdict(VerdictKind.HOST_UP))
    await inspector.drain()
    assert cloud.calls == [("port", "b", DataPlaneStatus.ACTIVE)]


@sync
async def test_ports_of_unknown_owner_are_left_to_neutron() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    await inspector.drain()
    inspector.topology.remove_port("b")  # e.g. a restarted controller still loading it
    cloud.calls.clear()
    assert await inspector.restore_server_ports("h1", "s0") is None
    assert cloud.calls == []


@sync
async def test_observe_mode_changes_nothing() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    inspector.settings = type(inspector.settings)(act=False)
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    await inspector.drain()
    assert cloud.calls == []
    inc = inspector.open["h1"]
    assert inc.state is IncidentState.OPEN
    assert all(a["skipped"] == "observe" for a in inc.actions)
    updates = [e for e in events.events if e.event_type == "compute.instance.update"]
    assert {e.traits["state"] for e in updates} == {"active", "deleted"}  # no false claim


def test_action_key_is_stable() -> None:
    a = Action(ActionKind.RESET_STATE, "s1", "error", "h1")
    assert a.key == "reset-state:s1:error"


@sync
async def test_a_correction_cut_short_by_a_restart_runs_again() -> None:
    cloud = RecordingCloud()
    first, _ = build(cloud)
    first.settings = type(first.settings)(act=False)  # acts on nothing: as if killed
    first.on_verdict(verdict(VerdictKind.HOST_DOWN))
    incident = Incident.from_dict(first.open["h1"].as_dict())
    incident.state = IncidentState.CORRECTING
    second, _ = build(cloud)
    second.adopt([incident])
    assert second.resume() == 1
    await second.drain()
    assert {c[0] for c in cloud.calls} == {"force-down", "reset", "port"}
    assert second.open["h1"].state is IncidentState.CORRECTED


@sync
async def test_a_recovered_host_waits_for_its_release() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    starter = Starter()
    inspector.recovery = starter
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))  # the upgrade: no second recovery
    await inspector.drain()
    assert [(h, v) for h, v, _ in starter.started] == [("h1", "HOST_UNREACHABLE")]
    assert starter.started[0][2]["s0"] == "active"  # the state before the reset
    calls = len(cloud.calls)
    inspector.on_verdict(verdict(VerdictKind.HOST_UP))
    await inspector.drain()
    inc = inspector.open["h1"]
    assert inc.awaiting_release and len(cloud.calls) == calls  # nothing until released
    assert "compute.host.up" not in events.types()
    result = await inspector.release("h1", "ops")
    assert ("force-down", "h1", False) in cloud.calls and ("enable", "h1", None) in cloud.calls
    assert result["ports_restored"] == 2
    assert events.types()[-1] == "compute.host.up"
    assert "h1" not in inspector.open


@sync
async def test_corrections_follow_the_recovery_order_and_each_server_settles_alone() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.recovery = Starter()
    gate = asyncio.Event()  # holds every call on s0 (the last to be moved) and its port
    do = cloud._do

    async def slow(kind: str, target: str, value: Any) -> None:
        if target in ("s0", "a"):
            await gate.wait()
        await do(kind, target, value)

    cloud._do = slow  # type: ignore[method-assign]
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    # s1 and its port are done while s0 is still held: s1's evacuation need not wait.
    await asyncio.wait_for(inspector.settled("s1"), 5)
    assert ("reset", "s1", "error") in cloud.calls and (
        "port",
        "b",
        DataPlaneStatus.DOWN,
    ) in cloud.calls
    waiting = asyncio.ensure_future(inspector.settled("s0"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gate.set()
    await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(inspector.settled("unknown-server"), 1)  # nothing pending: at once
    await inspector.drain()
    targets = [t for k, t, _ in cloud.calls if k in ("reset", "port")]
    assert targets.index("s2") < targets.index("s1") < targets.index("b") < targets.index("s0")


@sync
async def test_a_cancelled_correction_leaves_no_server_waiting() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    gate = asyncio.Event()
    do = cloud._do

    async def stuck(kind: str, target: str, value: Any) -> None:
        await gate.wait()
        await do(kind, target, value)

    cloud._do = stuck  # type: ignore[method-assign]
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    waiting = asyncio.ensure_future(inspector.settled("s0"))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    for task in list(inspector._tasks):
        task.cancel()
    await asyncio.wait_for(waiting, 5)


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []

    def record(
        self, kind: str, subject: str, actor: str, detail: dict[str, Any], trace_id: str | None
    ) -> None:
        self.entries.append((kind, subject, detail))

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.entries]


async def recovered_and_back(cloud: RecordingCloud) -> tuple[Inspector, Events, Starter, Audit]:
    """h1 lost, its recovery started and ended, then h1 heard from again."""
    inspector, events = build(cloud)
    inspector.recovery = starter = Starter()
    inspector.audit = audit = Audit()
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    await inspector.drain()
    inc = inspector.open["h1"]
    assert inc.recovery_id is not None
    inspector.recovery_progress(inc.id, inc.recovery_id, "COMPLETED", time.time(), True)
    inspector.on_verdict(verdict(VerdictKind.HOST_UP))
    await inspector.drain()
    assert inspector.open["h1"].awaiting_release
    return inspector, events, starter, audit


@sync
async def test_a_host_put_back_by_hand_closes_its_incident_then_a_new_loss_is_recovered() -> None:
    cloud = RecordingCloud()
    inspector, events, starter, audit = await recovered_and_back(cloud)
    first = inspector.open["h1"]
    now = time.time()
    inspector.on_service_view("h1", ServiceView(False, True, now + 1))  # still as we left it
    inspector.on_service_view("h1", ServiceView(True, False, now - 60))  # older than the end
    assert inspector.open["h1"] is first and audit.kinds() == []
    calls = len(cloud.calls)
    # `openstack compute service set --enable --up h1`, as the next poll shows it.
    inspector.on_service_view("h1", ServiceView(True, False, now + 2))
    assert "h1" not in inspector.open
    assert first.state is IncidentState.CLOSED and not first.awaiting_release
    assert first.closed_by == "released by the cloud (nova-compute enabled and not forced down)"
    assert audit.kinds() == ["host.released_in_cloud"]
    await inspector.drain()
    # Its ports go back as on a release through medevac; Nova is left as the operator set it.
    restored = cloud.calls[calls:]
    assert sorted(t for k, t, _ in restored) == ["a", "b"] and {k for k, _, _ in restored} == {
        "port"
    }
    assert not first.ports_down
    assert events.events[-1].event_type == "compute.host.up"
    assert events.events[-1].traits["released_by"].startswith("the cloud")
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))  # servers ran on it again; it fails
    await inspector.drain()
    second = inspector.open["h1"]
    assert second.id != first.id and second.recovery_id == f"recover-{second.id}"
    assert [v for _, v, _ in starter.started] == ["HOST_UNREACHABLE", "HOST_DOWN"]


@sync
async def test_a_loss_after_an_ended_recovery_is_a_new_incident_even_unreleased() -> None:
    cloud = RecordingCloud()
    inspector, _, starter, audit = await recovered_and_back(cloud)
    saved = inspector.saver
    assert isinstance(saved, Saved)
    first = inspector.open["h1"]
    left_down = dict(first.ports_down)
    assert left_down  # its ports stayed DOWN: nobody released the host
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    await inspector.drain()
    second = inspector.open["h1"]
    assert second.id != first.id and len(starter.started) == 2
    assert first.state is IncidentState.CLOSED
    assert first.closed_by is not None and first.closed_by.startswith(
        f"superseded by incident {second.id}"
    )
    assert second.ports_down == left_down and not first.ports_down  # restored on release
    assert audit.kinds() == ["incident.superseded"]
    # The store never holds two open incidents of h1: the old one is closed first.
    order = [(b["id"], b["state"]) for b in saved.saved]
    closed_at = order.index((first.id, "CLOSED"))
    assert all(i != second.id for i, _ in order[:closed_at])


@sync
async def test_a_loss_while_the_recovery_runs_joins_its_incident() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.recovery = starter = Starter()
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    inspector.on_verdict(verdict(VerdictKind.HOST_UP))
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    await inspector.drain()
    assert len(starter.started) == 1 and len(inspector.open) == 1
    inspector.on_service_view("h1", ServiceView(True, False, time.time() + 5))
    assert "h1" in inspector.open  # no release while its recovery has not ended


@sync
async def test_a_release_through_medevac_is_not_taken_for_one_by_the_cloud() -> None:
    cloud = RecordingCloud()
    inspector, _, _, audit = await recovered_and_back(cloud)
    enable = cloud.set_enabled

    async def enabled_then_seen(host: str, enabled: bool, reason: str | None = None) -> None:
        await enable(host, enabled, reason)
        inspector.on_service_view(host, ServiceView(True, False, time.time()))

    cloud.set_enabled = enabled_then_seen  # type: ignore[method-assign]
    result = await inspector.release("h1", "ops")
    assert result["ports_restored"] == 2 and audit.kinds() == []
    await inspector.drain()


@sync
async def test_the_hosts_lifecycle_follows_its_loss_recovery_return_and_release() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.recovery = Starter()
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    await inspector.drain()
    inc = inspector.open["h1"]
    assert inc.recovery_id is not None
    seen = [inspector.host_states.life("h1").state.value]
    steps = ["STARTED", "FENCING", "FENCED", "EVACUATING", "COMPLETED"]
    for state in steps:
        ended = state == "COMPLETED"
        inspector.recovery_progress(inc.id, inc.recovery_id, state, time.time(), ended)
        seen.append(inspector.host_states.life("h1").state.value)
    inspector.on_verdict(verdict(VerdictKind.HOST_UP))
    seen.append(inspector.host_states.life("h1").state.value)
    await inspector.release("h1", "ops")
    seen.append(inspector.host_states.life("h1").state.value)
    assert seen == [
        "LOST",
        "LOST",
        "FENCING",
        "FENCED",
        "RECOVERING",
        "RECOVERED",
        "AWAITING_RELEASE",
        "UP",
    ]
    await inspector.drain()


@sync
async def test_an_adopted_lost_host_whose_recovery_never_started_gets_one() -> None:
    """Its previous owner died between the verdict and recording the recovery: the
    controller taking the host over starts it, with the servers' states as known."""
    cloud = RecordingCloud()
    dying, _ = build(cloud)
    dying.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))  # no recovery configured there
    await dying.drain()
    inc = Incident.from_dict(dying.open["h1"].as_dict())  # as the store gives it back
    assert inc.recovery_id is None
    heir, _ = build(cloud)
    heir.recovery = starter = Starter()
    heir.adopt([inc])
    assert heir.recover_adopted(heir.open["h1"]) == f"recover-{inc.id}"
    assert [(h, v) for h, v, _ in starter.started] == [("h1", "HOST_UNREACHABLE")]
    heir.open["h1"].recovery_ended_at = 5.0
    assert heir.recover_adopted(heir.open["h1"]) is None  # ended: nothing to run
    assert len(starter.started) == 1


def fencing_failed(inspector: Inspector) -> Incident:
    """h1 lost, its recovery ended in FENCING_FAILED (as its workflow reports it)."""
    inspector.on_verdict(verdict(VerdictKind.HOST_UNREACHABLE))
    inc = inspector.open["h1"]
    assert inc.recovery_id is not None
    for state in ("FENCING", "FENCING_FAILED"):
        ended = state == "FENCING_FAILED"
        inspector.recovery_progress(inc.id, inc.recovery_id, state, time.time(), ended)
    assert inspector.host_states.life("h1").state.value == "FENCING_FAILED"
    return inc


@sync
async def test_an_adopted_retry_never_recorded_starts_as_that_retry() -> None:
    """Its owner died after deciding on the retry, before the workflow store recorded
    it: the heir starts that retry (same id: DBOS finds it if it exists), not the first
    recovery, which ended in FENCING_FAILED and would run nothing again."""
    cloud = RecordingCloud()
    dying, _ = build(cloud)
    dying.recovery = Starter()
    inc = fencing_failed(dying)
    retry = await dying.retry_recovery("h1", "ops")
    assert retry["recovery_id"] == f"recover-{inc.id}-retry1"
    stored = Incident.from_dict(dying.open["h1"].as_dict())
    moves = [Happening.LOST, Happening.FENCING, Happening.FENCING_FAILED, Happening.RETRIED]
    for stored_moves in (moves, moves[:-1]):  # its host's move back to LOST stored, or not
        heir, _ = build(cloud)
        heir.recovery = starter = Starter()
        for move in stored_moves:  # the host's lifecycle as the store gives it back
            heir.host_states.happen("h1", "z", move, inc.trace_id)
        heir.adopt([Incident.from_dict(stored.as_dict())])
        assert heir.recover_adopted(heir.open["h1"]) == f"recover-{inc.id}-retry1"
        assert starter.retried == [("h1", 1)] and starter.started == []
        assert heir.host_states.life("h1").state is HostState.LOST
        assert heir.open["h1"].recovery_id == f"recover-{inc.id}-retry1"
    await dying.drain()


class StoreWatch(Saved):
    """Notes, as each incident is stored, its host's state and the retries started."""

    def __init__(self, inspector: Inspector, starter: Starter) -> None:
        super().__init__()
        self.inspector = inspector
        self.starter = starter
        self.seen: list[tuple[str | None, str, int]] = []

    async def durable(self, incident_id: str) -> bool:
        inc = next(i for i in self.inspector.open.values() if i.id == incident_id)
        life = self.inspector.host_states.life(inc.host).state.value
        self.seen.append((inc.recovery_id, life, len(self.starter.retried)))
        return True


@sync
async def test_a_retry_is_stored_with_its_incident_before_its_host_moves_or_it_starts() -> None:
    """A controller dying right after either finds the retry in the incident it reads
    back: never a host moved back to LOST, or a workflow, with the incident still
    naming the first recovery (nothing would then start it, and a retry is refused)."""
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.recovery = starter = Starter()
    inc = fencing_failed(inspector)
    inspector.saver = watch = StoreWatch(inspector, starter)
    await inspector.retry_recovery("h1", "ops")
    assert watch.seen == [(f"recover-{inc.id}-retry1", "FENCING_FAILED", 0)]
    assert watch.saved[-1]["recovery_id"] == f"recover-{inc.id}-retry1"
    assert inspector.host_states.life("h1").state.value == "LOST"
    assert starter.retried == [("h1", 1)]
    await inspector.drain()


class Audited:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []

    def record(
        self, kind: str, subject: str, actor: str, detail: dict[str, Any], trace_id: str | None
    ) -> None:
        self.entries.append((kind, subject, detail))


@sync
async def test_an_empty_host_under_maintenance_going_silent_is_no_failure() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    inspector.audit = audit = Audited()
    assert inspector.maintenance("h2", started=True, detail={"by": "op"}) is not None
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN, host="h2"))
    await inspector.drain()
    assert inspector.open == {} and cloud.calls == [] and events.events == []
    assert inspector.expected_losses == 1
    assert [(k, s) for k, s, _ in audit.entries] == [("maintenance.host.silent", "h2")]
    assert inspector.host_states.life("h2").state.value == "MAINTENANCE"


@sync
async def test_a_host_under_maintenance_with_servers_left_is_recovered_as_any_other() -> None:
    cloud = RecordingCloud()
    inspector, events = build(cloud)
    starter = inspector.recovery = Starter()
    inspector.maintenance("h1", started=True, detail={})  # s0..s2 still on it
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    await inspector.drain()
    assert "h1" in inspector.open and starter.started
    assert ("force-down", "h1", True) in cloud.calls
    assert events.types().count("compute.instance.update") == 4
    assert inspector.host_states.life("h1").state.value == "LOST"
    assert inspector.expected_losses == 0


def test_a_maintenance_ends_only_where_it_started() -> None:
    inspector, _ = build(RecordingCloud())
    assert inspector.maintenance("h3", started=False, detail={}) is None
    assert inspector.maintenance("h3", started=True, detail={}) is not None
    assert inspector.maintenance("h3", started=True, detail={}) is None
    assert inspector.maintenance("h3", started=False, detail={}) is not None
    assert inspector.host_states.life("h3").state.value == "UP"


@sync
async def test_the_maintenances_own_count_of_servers_left_beats_a_stale_topology() -> None:
    cloud = RecordingCloud()
    inspector, _ = build(cloud)
    inspector.audit = Audited()
    inspector.maintenance("h1", started=True, detail={})  # the topology still lists s0..s2
    inspector.maintenance_left = {"h1": 0}.get  # Nova's listing after the migrations
    inspector.on_verdict(verdict(VerdictKind.HOST_DOWN))
    await inspector.drain()
    assert inspector.open == {} and cloud.calls == [] and inspector.expected_losses == 1

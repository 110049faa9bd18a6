"""The host monitor: heartbeats in, verdicts out.

Per host, a phi-accrual detector watches heartbeat arrivals. When phi crosses the
threshold the host is SUSPECT and a confirmation runs: direct probes to the agent
(any answer clears the suspicion), then the BMC's power state and Nova's view of the
compute service, read in parallel under deadlines. Only then is there a verdict.
Before a host verdict the zone is checked: when most of it went silent together the
monitor suspects itself (OBSERVER_ISOLATED) and gives no per-host verdict.
Everything here runs on the controller's event loop and never blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import logging
import os
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from medevac.cloud.nova_events import NovaEvent
from medevac.cluster.quorum import Agreement, Decision
from medevac.monitor.correlate import (
    Sighting,
    check_changes,
    host_loss_verdict,
    loss_evidence,
    observer_isolated,
)
from medevac.monitor.detector import PhiAccrualDetector
from medevac.monitor.protocol import (
    Admission,
    Checks,
    Datagram,
    DatagramError,
    DatagramKind,
    DropReason,
    HostKeys,
    SequenceGuard,
    decode_signed,
    encode,
)
from medevac.monitor.raw import Ignored, RawFault, RawFaultKind, UnknownHost
from medevac.monitor.verdicts import Verdict, VerdictKind, VerdictSink

log = logging.getLogger(__name__)

KEPT_VERDICTS = 500  # the verdicts kept for the API, newest last

RECEIVE_BUFFER = 8 << 20


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 0.1  # the agents' heartbeat interval
    phi_threshold: float = 8.0
    max_clock_skew: float = 5.0
    probes: int = 3
    probe_timeout: float = 0.04
    bmc_timeout: float = 1.0  # one BMC read
    bmc_verdict_wait: float = 0.06  # how long a verdict waits for the BMC (from suspicion)
    nova_refresh: float = 2.0  # Nova's view is polled in the background, off the fault path
    bmc_refresh: float = 10.0  # each BMC is read this often anyway: warm sessions, last seen
    bmc_retry_interval: float = 1.0
    bmc_retries: int = 30
    isolation_fraction: float = 0.5
    isolation_window: float = 2.0
    isolation_min_hosts: int = 3
    tick: float = 0.01
    # A tick this late means the controller's own loop stalled (CPU starved, a long
    # callback): the silence it would measure is its own, so deadlines move by the stall.
    stall: float = 0.05


class Quorum(Protocol):
    """The other controllers' word on a host's silence."""

    async def ask(self, host: str) -> dict[str, float | None]: ...

    def decide(self, suspect_after: float, answers: dict[str, float | None]) -> Decision: ...


class PowerReader(Protocol):
    async def is_off(self, host: str) -> bool:
        """True when the BMC says off, False when on; raises when it does not answer."""
        ...


class NovaView(Protocol):
    async def compute_services(self) -> dict[str, dict[str, Any]]:
        """Nova's view of every compute service (state, status, forced_down, ...) by host."""
        ...


class HostState(enum.StrEnum):
    UNKNOWN = "UNKNOWN"  # no heartbeat yet
    UP = "UP"
    SUSPECT = "SUSPECT"  # phi over the threshold, confirmation running
    LOST = "LOST"  # a HOST_DOWN or HOST_UNREACHABLE verdict stands
    ISOLATED = "ISOLATED"  # silent, but the zone is suspected to be our own partition


@dataclass
class HostWatch:
    name: str
    zone: str
    detector: PhiAccrualDetector
    guard: SequenceGuard = field(default_factory=SequenceGuard)
    state: HostState = HostState.UNKNOWN
    agent_addr: tuple[str, int] | None = None
    checks: Checks | None = None
    last_heartbeat_wall: float | None = None
    suspect_since: float | None = None  # monotonic
    raw_received_at: float | None = None  # wall clock the suspicion's signal arrived: T01
    observed_at: float | None = None  # when an external source says the fault happened
    verdict: Verdict | None = None
    bmc_power: str | None = None  # "on" | "off" | None (never read)
    bmc_seen_at: float | None = None
    bmc_error: str | None = None
    nova: dict[str, Any] | None = None
    nova_seen_at: float | None = None  # wall clock
    probe_answered: asyncio.Event = field(default_factory=asyncio.Event)
    power_read: asyncio.Future[bool | None] | None = None
    deadline: float | None = None  # monotonic time phi reaches the threshold
    agent_key: bytes | None = None  # the key its agent's last heartbeat was signed with


class HostMonitor(asyncio.DatagramProtocol):
    """Receives heartbeats on a UDP socket, keeps the detectors, publishes verdicts."""

    def __init__(
        self,
        hosts: dict[str, str],  # name -> zone
        master_key: bytes,
        sink: VerdictSink,
        power: PowerReader,
        nova: NovaView,
        settings: MonitorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_suspect: Callable[[str], None] | None = None,
        on_nova_view: Callable[[str, dict[str, Any], float], None] | None = None,
        accept_master_key: bool = False,
        owns: Callable[[str], bool] | None = None,
        quorum: Quorum | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings or MonitorSettings()
        # Told each time a host's state changes (host, new state): the live views.
        self.on_state = on_state
        # Whether this controller owns a host now. Every controller hears every host
        # (a new owner knows its rhythm at once); only the owner suspects, probes,
        # reads its BMC and gives verdicts on it.
        self.owns = owns or (lambda host: True)
        # Several controllers: a loss verdict needs a majority of them to find the host
        # silent (None: one controller, it decides alone).
        self.quorum = quorum
        # Told each host's Nova view as it is refreshed, with the wall-clock time it
        # stood at: what medevac believes of a host follows what Nova shows of it.
        self.on_nova_view = on_nova_view
        # Told when a host turns suspect, before the confirmation: what a verdict on
        # it would need can be made ready meanwhile (the consumers' connections).
        self.on_suspect = on_suspect
        self.keys = HostKeys(master_key, hosts)  # each host's own, derived from the master
        # A datagram signed with the master key itself (one key shared by every host,
        # as before per-host keys): taken only while this is True, logged either way.
        self.accept_master_key = accept_master_key
        self.master_key_hosts: set[str] = set()  # hosts heard signing with it
        self._boot_id = os.urandom(16)  # names this process in requests to agents
        self._request_seq = 0
        self.sink = sink
        self.power = power
        self.nova = nova
        self.clock = clock
        self.wall = wall
        self.hosts = {
            name: HostWatch(name, zone, PhiAccrualDetector(self.settings.interval))
            for name, zone in hosts.items()
        }
        self.drops: Counter[str] = Counter()
        self.received = 0
        self.copies = 0
        self.suspicions_cleared = 0
        self.nova_error: str | None = None
        self.nova_events: Counter[str] = Counter()
        # Nova's timestamp to our receipt: a recovery waiting on a task's end hears of
        # it this late (a busy Nova's publisher, the broker).
        self.nova_event_lag = Delays()
        self.isolated_zones: set[str] = set()
        # When each zone's first host came back: its other hosts are judged alone only
        # an isolation window later, since a partition heals host by host too.
        self._zone_back_at: dict[str, float] = {}
        self.recent_verdicts: deque[Verdict] = deque(maxlen=KEPT_VERDICTS)
        self._seen_keys: OrderedDict[str, None] = OrderedDict()
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loop_lag = LoopLag(self.settings.tick)
        self.stalls = 0  # ticks that came too late to judge silence on
        self.running = False  # ``run`` is evaluating the detectors
        self._deadlines: list[tuple[float, str]] = []  # heap of (suspect-at, host)
        self._any_isolated = False
        self._zone_cache: dict[str, tuple[float, bool]] = {}

    # -- heartbeats (the hot path: no I/O, no await) ------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Room for bursts (thousands of agents whose heartbeats happen to align).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        arrival = self.clock()
        try:
            d, key = decode_signed(data, self.keys.candidates)
        except DatagramError as exc:
            self.drops[exc.reason] += 1
            return
        watch = self.hosts.get(d.host)
        if watch is None:
            self.drops[DropReason.UNKNOWN_HOST] += 1
            return
        if self.keys.is_master(key) and not self._master_signed(watch):
            self.drops[DropReason.BAD_MAC] += 1
            return
        if abs(self.wall() - d.sent_at) > self.settings.max_clock_skew:
            self.drops[DropReason.CLOCK_SKEW] += 1
            return
        if d.kind is DatagramKind.PROBE:
            self.drops[DropReason.MALFORMED] += 1  # probes go to agents, not to us
            return
        admission = watch.guard.admit(d)
        if admission is Admission.REPLAY:
            self.drops[DropReason.REPLAY] += 1
            return
        if admission is Admission.COPY:
            self.copies += 1
            return
        self.received += 1
        watch.agent_key = key  # requests to the agent are signed with what it signs with
        self._on_heartbeat(watch, d, arrival, addr)

    def _master_signed(self, watch: HostWatch) -> bool:
        """A datagram from ``watch``'s host signed with the master key: taken only in
        the transition from a shared key; said once per host either way."""
        if watch.name not in self.master_key_hosts:
            self.master_key_hosts.add(watch.name)
            if self.accept_master_key:
                log.warning(
                    "host %s signs heartbeats with the master key (accepted while "
                    "monitor.accept_master_key is true): give it its own key with "
                    "'medevac agent-key %s'",
                    watch.name,
                    watch.name,
                )
            else:
                log.error(
                    "host %s signs heartbeats with the master key: refused as a bad MAC, "
                    "so it looks silent; give it its own key with 'medevac agent-key %s', or set "
                    "monitor.accept_master_key while its agents move over",
                    watch.name,
                    watch.name,
                )
        return self.accept_master_key

    def _on_heartbeat(
        self, watch: HostWatch, d: Datagram, arrival: float, addr: tuple[str, int]
    ) -> None:
        if watch.state in (HostState.LOST, HostState.ISOLATED):
            # Back from an outage: start learning afresh rather than from its silence.
            watch.detector = PhiAccrualDetector(self.settings.interval)
        watch.detector.heartbeat(arrival)
        deadline = watch.detector.suspect_at(self.settings.phi_threshold)
        if deadline is not None:
            watch.deadline = deadline
            heapq.heappush(self._deadlines, (deadline, watch.name))
        watch.agent_addr = addr
        watch.last_heartbeat_wall = d.sent_at
        watch.probe_answered.set()
        if watch.state is HostState.LOST:
            self._publish(
                watch,
                VerdictKind.HOST_UP,
                {
                    "after": watch.verdict.kind.value if watch.verdict else None,
                    "heartbeat_sent_at": d.sent_at,
                },
            )
        if watch.state is HostState.ISOLATED and watch.zone in self.isolated_zones:
            self.isolated_zones.discard(watch.zone)
            self._zone_back_at[watch.zone] = arrival
        if watch.state is not HostState.SUSPECT and watch.state is not HostState.UP:
            self._set_state(watch, HostState.UP)
        if d.checks != watch.checks:
            for kind, subject in check_changes(watch.checks, d.checks):
                self._publish(watch, kind, {"agent_checks": _checks_dict(d.checks)}, subject)
            watch.checks = d.checks

    # -- suspicion and confirmation ----------------------------------------------

    async def run(self) -> None:
        """Evaluate every detector each tick until cancelled."""
        tick = self.settings.tick
        self._spawn(self._refresh_nova())
        if self.settings.bmc_refresh > 0:
            self._spawn(self._refresh_bmc())
        self.running = True
        try:
            while True:
                await asyncio.sleep(tick)
                now = self.clock()
                lag = self.loop_lag.observe(now)
                if lag > self.settings.stall:
                    self._postpone_deadlines(lag)
                    # Its own work is no stall: with tens of thousands of hosts it can
                    # take longer than ``stall``, and the next tick, counted from before
                    # it, would postpone again, and again, and never judge anyone.
                    self.loop_lag.resume(self.clock())
                    continue
                self._evaluate(now)
        finally:
            self.running = False
            for task in list(self._tasks):
                task.cancel()

    def _postpone_deadlines(self, by: float) -> None:
        """The heartbeats sent while this loop stalled are still in the socket: nobody
        is suspected for a silence the controller caused itself."""
        self.stalls += 1
        for watch in self.hosts.values():
            if watch.deadline is not None:
                watch.deadline += by
        # Rebuilt from the hosts' own deadlines, the only entries ``_evaluate`` acts on:
        # the stale ones go, so the heap is at most one entry a host (O(hosts), not
        # O(heartbeats since the last tick that evaluated)).
        self._deadlines = [
            (w.deadline, w.name) for w in self.hosts.values() if w.deadline is not None
        ]
        heapq.heapify(self._deadlines)

    def _evaluate(self, now: float) -> None:
        # Only hosts whose deadline has passed are looked at: O(due), not O(hosts).
        due = self._deadlines
        while due and due[0][0] <= now:
            deadline, name = heapq.heappop(due)
            watch = self.hosts[name]
            if watch.deadline != deadline:
                continue  # a heartbeat moved this host's deadline since
            watch.deadline = None
            if watch.state is HostState.UP and self.owns(name):
                self._suspect(watch, now, "heartbeats stopped")
        for zone_host in self._isolated_hosts(now):
            # The zone came back a window ago but this host did not: judge it alone.
            self._suspect(zone_host, now, "still silent after the zone came back")

    def _isolated_hosts(self, now: float) -> list[HostWatch]:
        if not self._any_isolated:
            return []
        grace = self.settings.isolation_window
        stuck = [
            h
            for h in self.hosts.values()
            if h.state is HostState.ISOLATED
            and h.zone not in self.isolated_zones
            and now - self._zone_back_at.get(h.zone, -grace) >= grace
        ]
        self._any_isolated = any(h.state is HostState.ISOLATED for h in self.hosts.values())
        return stuck

    def _suspect(
        self,
        watch: HostWatch,
        now: float,
        reason: str,
        received_at: float | None = None,
        observed_at: float | None = None,
    ) -> None:
        self._set_state(watch, HostState.SUSPECT)
        watch.suspect_since = now
        watch.raw_received_at = received_at if received_at is not None else self.wall()
        watch.observed_at = observed_at
        watch.probe_answered.clear()
        self._spawn(self._confirm(watch, reason=reason))
        if self.on_suspect is not None:
            try:
                self.on_suspect(watch.name)
            except Exception:  # getting ready is an optimisation, never a failure
                log.exception("preparing for a verdict on %s failed", watch.name)

    def _set_state(self, watch: HostWatch, state: HostState) -> None:
        if watch.state is state:
            return
        watch.state = state
        if self.on_state is not None:
            try:
                self.on_state(watch.name, state.value)
            except Exception:  # a live view must never cost a verdict
                log.exception("on_state failed for %s", watch.name)

    def taken(self, hosts: set[str]) -> int:
        """This controller now owns ``hosts``: one already silent past its deadline
        (its owner died with it, or while it was failing) is suspected at once.
        Returns how many were."""
        now = self.clock()
        threshold = self.settings.phi_threshold
        suspected = 0
        for name in hosts:
            watch = self.hosts.get(name)
            if watch is None or watch.state is not HostState.UP:
                continue
            due = watch.detector.suspect_at(threshold)
            if due is not None and due <= now:
                self._suspect(watch, now, "silent when this controller took it over")
                suspected += 1
        return suspected

    def _judge_again(self, watch: HostWatch) -> None:
        """No verdict for now (the other controllers still hear it, or too few answered):
        the host is looked at again a few intervals later, as long as it stays silent."""
        self._set_state(watch, HostState.UP)
        again = self.clock() + 10 * self.settings.interval
        watch.deadline = again
        heapq.heappush(self._deadlines, (again, watch.name))

    def silence_of(self, host: str) -> float | None:
        """How long (s) this controller has not heard ``host`` (None: never heard)."""
        watch = self.hosts.get(host)
        if watch is None or watch.detector.last_arrival is None:
            return None
        return watch.detector.silence(self.clock())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_compute_restart(self, host: str) -> bool:
        """Ask the host's agent to restart nova-compute (signed, with this process's
        own boot id and a rising sequence, so the agent can refuse replays); False
        when the agent has not been heard from."""
        watch = self.hosts.get(host)
        if self._transport is None or watch is None or watch.agent_addr is None:
            return False
        self._request_seq += 1
        request = Datagram(
            DatagramKind.RESTART_COMPUTE, host, self._request_seq, self._boot_id, self.wall()
        )
        self._transport.sendto(encode(request, self._key_of(watch)), watch.agent_addr)
        return True

    def compute_alive(self, host: str) -> bool | None:
        """nova-compute as the host's last heartbeat said (None: nothing heard yet)."""
        watch = self.hosts.get(host)
        return None if watch is None or watch.checks is None else watch.checks.compute_alive

    def _send_probe(self, watch: HostWatch) -> None:
        if self._transport is None or watch.agent_addr is None:
            return
        probe = Datagram(DatagramKind.PROBE, watch.name, 0, bytes(16), self.wall())
        self._transport.sendto(encode(probe, self._key_of(watch)), watch.agent_addr)

    def _key_of(self, watch: HostWatch) -> bytes:
        return watch.agent_key or self.keys.for_host(watch.name)

    async def _confirm(self, watch: HostWatch, reason: str) -> None:
        started = self.clock()
        # Both paths at once: direct probes to the agent (any answer clears the
        # suspicion, whatever the network lost) and the BMC's power state (bounded).
        # Nova's view, polled in the background, goes into the evidence unwaited.
        power = asyncio.ensure_future(self._read_power(watch))
        asked = asyncio.ensure_future(self.quorum.ask(watch.name)) if self.quorum else None
        for _ in range(self.settings.probes):
            self._send_probe(watch)
        try:
            await asyncio.wait_for(watch.probe_answered.wait(), self.settings.probe_timeout)
        except TimeoutError:
            pass
        else:
            power.cancel()
            if asked is not None:
                asked.cancel()
            self.suspicions_cleared += 1
            self._set_state(watch, HostState.UP)
            return
        # The BMC gets a short wait of its own: a slow answer must not delay the
        # verdict. Without it the verdict is HOST_UNREACHABLE (needs fencing), and the
        # read goes on: power off, when it comes, upgrades the verdict to HOST_DOWN.
        waited = self.clock() - started
        try:
            power_off = await asyncio.wait_for(
                asyncio.shield(power), max(0.0, self.settings.bmc_verdict_wait - waited)
            )
        except TimeoutError:
            power_off = None
            watch.bmc_error = (
                f"no answer within {self.settings.bmc_verdict_wait * 1000:.0f} ms (still asking)"
            )
        if watch.probe_answered.is_set():  # a heartbeat arrived meanwhile
            if asked is not None:
                asked.cancel()
            self.suspicions_cleared += 1
            self._set_state(watch, HostState.UP)
            return
        # 3. Is it us? Most of the zone silent at once means an observer partition.
        if self._zone_isolated(watch.zone):
            if watch.zone not in self.isolated_zones:
                self.isolated_zones.add(watch.zone)
                now = self.clock()
                silent = [h.name for h in self._zone(watch.zone) if self._went_silent(h, now)]
                self._publish_zone(watch.zone, silent)
            self._set_state(watch, HostState.ISOLATED)
            self._any_isolated = True
            return
        if not self.owns(watch.name):  # it moved to another controller meanwhile
            self._set_state(watch, HostState.UP)
            return
        agreed: dict[str, Any] | None = None
        if asked is not None and self.quorum is not None:
            answers = await asked
            if watch.probe_answered.is_set():  # heard meanwhile
                self.suspicions_cleared += 1
                self._set_state(watch, HostState.UP)
                return
            suspect_after = watch.detector.time_to_threshold(self.settings.phi_threshold)
            decision = self.quorum.decide(suspect_after, answers)
            agreed = decision.as_evidence()
            if decision.agreement is not Agreement.AGREED:
                log.warning("no verdict on %s: %s %s", watch.name, decision.agreement, agreed)
                self._judge_again(watch)
                return
        kind = host_loss_verdict(power_off)
        seen = Sighting(
            reason=reason,
            silence_s=watch.detector.silence(self.clock()),
            confirm_s=self.clock() - started,
            bmc_power=watch.bmc_power,
            bmc_error=watch.bmc_error,
            nova=watch.nova,
            nova_age_s=self.wall() - watch.nova_seen_at if watch.nova_seen_at else None,
            last_heartbeat_sent_at=watch.last_heartbeat_wall,
            raw_received_at=watch.raw_received_at,
            observed_at=watch.observed_at,
        )
        s = self.settings
        evidence = loss_evidence(seen, phi_threshold=s.phi_threshold, probes=s.probes)
        if agreed is not None:
            evidence["quorum"] = agreed
        self._set_state(watch, HostState.LOST)
        self._publish(watch, kind, evidence)
        if kind is VerdictKind.HOST_UNREACHABLE:
            self._spawn(self._keep_reading_power(watch))

    async def _keep_reading_power(self, watch: HostWatch) -> None:
        """After HOST_UNREACHABLE, keep asking the BMC (bounded): power off upgrades it."""
        for attempt in range(self.settings.bmc_retries):
            # The first answer may be the read still in flight. One the verdict already
            # has is not asked again at once: that read would compete for the CPU with
            # the alarms going out in these milliseconds, for an answer just given.
            in_flight = watch.power_read is not None and not watch.power_read.done()
            if attempt or not in_flight:
                await asyncio.sleep(self.settings.bmc_retry_interval)
            if watch.state is not HostState.LOST:
                return
            off = await self._read_power(watch)
            if watch.state is not HostState.LOST:
                return  # back while the BMC was being asked: its answer is stale
            if off:
                previous = watch.verdict.trace_id if watch.verdict else None
                evidence = {
                    "reason": "BMC now reports power off",
                    "bmc_power": "off",
                    "upgrades": previous,
                }
                self._publish(watch, VerdictKind.HOST_DOWN, evidence)
                return

    async def _read_power(self, watch: HostWatch) -> bool | None:
        """The BMC's power state (True: off), or None when it did not answer in time.

        One read per host at a time: a caller arriving while a read is in flight gets
        that read's answer, so a BMC session is never used by two calls at once.
        """
        if watch.power_read is None or watch.power_read.done():
            watch.power_read = asyncio.ensure_future(self._read_power_once(watch))
        return await asyncio.shield(watch.power_read)

    async def _read_power_once(self, watch: HostWatch) -> bool | None:
        try:
            off = await asyncio.wait_for(self.power.is_off(watch.name), self.settings.bmc_timeout)
        except Exception as exc:  # any BMC failure is evidence, never a crash
            watch.bmc_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return None
        watch.bmc_power, watch.bmc_seen_at, watch.bmc_error = (
            "off" if off else "on",
            self.wall(),
            None,
        )
        return off

    async def _refresh_bmc(self) -> None:
        """Read every BMC now and then, spread over the period: power as last seen in the
        API, and IPMI sessions already open when a confirmation needs them."""
        while True:
            for watch in list(self.hosts.values()):
                up = watch.state in (HostState.UP, HostState.UNKNOWN)
                if up and self.owns(watch.name):  # a BMC is read by its host's owner only
                    self._spawn(self._read_power(watch))
                await asyncio.sleep(self.settings.bmc_refresh / max(1, len(self.hosts)))

    async def _refresh_nova(self) -> None:
        """Keep Nova's view of every compute service fresh (one listing per period)."""
        while True:
            asked = self.wall()  # the listing shows Nova as of this moment, or later
            try:
                services = await asyncio.wait_for(
                    self.nova.compute_services(), self.settings.nova_refresh * 5
                )
            except Exception as exc:  # Nova down is evidence too, never a crash
                self.nova_error = f"{type(exc).__name__}: {exc}"
            else:
                self.nova_error = None
                now = self.wall()
                for name, view in services.items():
                    watch = self.hosts.get(name)
                    if watch is not None:
                        self._nova_seen(watch, view, now, asked)
            await asyncio.sleep(self.settings.nova_refresh)

    def _nova_seen(self, watch: HostWatch, view: dict[str, Any], now: float, as_of: float) -> None:
        watch.nova, watch.nova_seen_at = view, now
        if self.on_nova_view is not None:
            try:
                self.on_nova_view(watch.name, view, as_of)
            except Exception:  # a consumer's bug must not stop the view's refresh
                log.exception("the Nova view of %s was not taken", watch.name)

    def _zone(self, zone: str) -> list[HostWatch]:
        return [h for h in self.hosts.values() if h.zone == zone]

    def _zone_isolated(self, zone: str) -> bool:
        """Did most of the zone go silent together, within the isolation window?

        A host counts as silent once it has missed a heartbeat (silence over 1.5 mean
        intervals), not only once it is suspected: agents' heartbeats are out of phase,
        so in a partition of the observer the last host is suspected up to an interval
        after the first, and the first must not get a verdict in the meantime.
        """
        now = self.clock()
        cached = self._zone_cache.get(zone)
        if cached is not None and now - cached[0] < self.settings.tick:
            return cached[1]  # many confirmations at once share one count: O(hosts) per tick
        members = self._zone(zone)
        silent = sum(1 for h in members if self._went_silent(h, now))
        isolated = observer_isolated(
            len(members),
            silent,
            fraction=self.settings.isolation_fraction,
            min_hosts=self.settings.isolation_min_hosts,
        )
        self._zone_cache[zone] = (now, isolated)
        return isolated

    def _went_silent(self, h: HostWatch, now: float) -> bool:
        quiet = h.detector.silence(now)
        return 1.5 * h.detector.mean < quiet <= self.settings.isolation_window

    # -- verdicts -----------------------------------------------------------------

    def _publish(
        self,
        watch: HostWatch,
        kind: VerdictKind,
        evidence: dict[str, Any],
        subject: str | None = None,
    ) -> None:
        if not self.owns(watch.name):
            return  # only its owner speaks of a host
        verdict = Verdict(kind, watch.name, self.wall(), evidence, subject)
        if kind.host_lost or kind is VerdictKind.HOST_UP:
            watch.verdict = verdict
        self._emit(verdict)

    def _publish_zone(self, zone: str, silent: list[str]) -> None:
        self._emit(
            Verdict(
                VerdictKind.OBSERVER_ISOLATED,
                zone,
                self.wall(),
                {"silent_hosts": sorted(silent), "zone_size": len(self._zone(zone))},
            )
        )

    def _emit(self, verdict: Verdict) -> None:
        self.recent_verdicts.append(verdict)
        log.info("verdict %s %s %s", verdict.kind, verdict.host, verdict.subject or "")
        self.sink.on_verdict(verdict)

    def presume_lost(self, host: str) -> None:
        """A host an earlier controller process, or its previous owner, judged lost (its
        incident is still open): its next heartbeat is then a HOST_UP, which heals the
        incident, and its silence is not judged again."""
        watch = self.hosts.get(host)
        if watch is not None and watch.state in (HostState.UNKNOWN, HostState.UP):
            self._set_state(watch, HostState.LOST)

    # -- raw faults from other inputs (FaultSink) ---------------------------------

    async def submit(self, fault: RawFault) -> bool | Ignored:
        """A host-down report feeds the same confirmation as a silent heartbeat; every
        other report is ignored with its reason (see ``_not_acted_on``)."""
        watch = self.hosts.get(fault.host)
        if watch is None:
            raise UnknownHost(fault.host)
        if fault.key in self._seen_keys:
            return False
        self._seen_keys[fault.key] = None
        if len(self._seen_keys) > 100_000:
            self._seen_keys.popitem(last=False)
        reason = _not_acted_on(fault, watch)
        if reason is None and not self.owns(fault.host):
            reason = "another controller owns the host and judges it from its own reports"
        if reason is not None:
            log.info("%s %s on %s ignored: %s", fault.source, fault.kind, fault.host, reason)
            lost = fault.kind is RawFaultKind.HOST_DOWN and watch.state is HostState.LOST
            return Ignored(reason, under_way=lost)
        if fault.kind is RawFaultKind.HOST_DOWN and watch.state in (
            HostState.UP,
            HostState.UNKNOWN,
        ):
            self._suspect(
                watch,
                self.clock(),
                f"{fault.source} reported host down",
                fault.received_at,
                fault.observed_at,
            )
        # SUSPECT: the confirmation under way decides; a process or server fault: the
        # agent's own report of it is being acted on.
        return True

    # -- Nova's notifications -----------------------------------------------------

    def on_nova_event(self, event: NovaEvent) -> None:
        """A versioned notification from Nova: keeps Nova's view current between polls."""
        self.nova_events[event.event_type] += 1
        sent = event.sent_at()
        if sent is not None:
            self.nova_event_lag.add(max(0.0, self.wall() - sent))
        data = event.payload
        if event.event_type != "service.update" or data.get("binary") != "nova-compute":
            return
        watch = self.hosts.get(str(data.get("host")))
        if watch is None:
            return
        view = dict(watch.nova or {})
        view.update(
            status="disabled" if data.get("disabled") else "enabled",
            forced_down=bool(data.get("forced_down")),
            disabled_reason=data.get("disabled_reason"),
            last_seen_up=data.get("last_seen_up"),
        )
        if view["forced_down"]:
            view["state"] = "down"
        now = self.wall()
        self._nova_seen(watch, view, now, sent if sent is not None else now)

    # -- views --------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for w in self.hosts.values():
            out.append(
                {
                    "name": w.name,
                    "zone": w.zone,
                    "state": w.state.value,
                    "detector": {
                        "phi": min(round(w.detector.phi(now), 2), 999.0),
                        "threshold": self.settings.phi_threshold,
                        "last_heartbeat_age_s": (
                            round(w.detector.silence(now), 3)
                            if w.detector.last_arrival is not None
                            else None
                        ),
                        "mean_interval_s": round(w.detector.mean, 4),
                        "std_s": round(w.detector.std, 4),
                    },
                    "agent": _checks_dict(w.checks) if w.checks else None,
                    "bmc": {
                        "power": w.bmc_power,
                        "seen_at": w.bmc_seen_at,
                        "error": w.bmc_error,
                    },
                    "nova": w.nova,
                    "verdict": w.verdict.as_dict() if w.verdict else None,
                }
            )
        return out

    def counters(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "copies": self.copies,
            "dropped": {reason.value: self.drops.get(reason, 0) for reason in DropReason},
            "master_key_hosts": sorted(self.master_key_hosts),
            "suspicions_cleared": self.suspicions_cleared,
            "nova_error": self.nova_error,
            "nova_notifications": dict(self.nova_events),
            "nova_notification_lag_ms": self.nova_event_lag.summary(),
            "loop_lag_ms": self.loop_lag.summary(),
            "loop_stalls": self.stalls,
        }


def _not_acted_on(fault: RawFault, watch: HostWatch) -> str | None:
    """Why an external report changes nothing, or None when it is acted on: only a
    host-down report on a host that is up, unknown or already suspect is."""
    if fault.kind is RawFaultKind.HOST_DOWN:
        if watch.state is HostState.LOST:
            return "the host is already judged lost; its incident goes on"
        if watch.state is HostState.ISOLATED:
            return (
                "the host's zone went silent together: the controller is suspected "
                "to be cut off, and no host there is judged"
            )
        return None
    if fault.kind is RawFaultKind.HOST_UP:
        return (
            "a host is back only when its own agent's heartbeats are, and stays "
            "forced down until released; a report of it up changes nothing"
        )
    if _agent_agrees(fault, watch.checks):
        return None
    return (
        f"{fault.kind} is judged from the host agent's own checks, sent with every "
        f"heartbeat, not from other monitors' reports ({_agent_view(watch.checks)})"
    )


def _agent_agrees(fault: RawFault, c: Checks | None) -> bool:
    """Whether the host's agent reports the same process or server fault: then the
    report is acted on, as the agent's own (its verdict came, or comes, from it)."""
    if c is None:
        return False
    if fault.kind is RawFaultKind.COMPUTE_PROCESS_DOWN:
        return not c.compute_alive
    if fault.kind is RawFaultKind.SERVER_DOWN:
        return str(fault.details.get("server_id")) in c.domains_down
    return False


def _agent_view(c: Checks | None) -> str:
    if c is None:
        return "no heartbeat heard from its agent yet"
    links = ", ".join(c.links_down) or "none"
    alive = "alive" if c.compute_alive else "dead"
    return f"its agent's last heartbeat: nova-compute {alive}, links down: {links}"


def _checks_dict(c: Checks | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "compute_alive": c.compute_alive,
        "links_down": list(c.links_down),
        "domains_down": list(c.domains_down),
    }


class Delays:
    """The last ``keep`` delays (s), summarised in ms for the API."""

    def __init__(self, keep: int = 1000) -> None:
        self._lags: deque[float] = deque(maxlen=keep)

    def add(self, delay: float) -> None:
        self._lags.append(delay)

    def summary(self) -> dict[str, float]:
        if not self._lags:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        values = sorted(self._lags)

        def pick(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(values[-1] * 1000, 2)}


class LoopLag(Delays):
    """How late the monitor's tick wakes up: the event loop's lag, exposed in the API."""

    def __init__(self, tick: float, keep: int = 1000) -> None:
        super().__init__(keep)
        self._expected: float | None = None
        self.tick = tick

    def observe(self, now: float) -> float:
        """Record one wake-up; returns how late it was."""
        lag = 0.0
        if self._expected is not None:
            lag = max(0.0, now - self._expected)
            self.add(lag)
        self._expected = now + self.tick
        return lag

    def resume(self, now: float) -> None:
        """The next wake-up is expected a tick after ``now``, not after the last one."""
        self._expected = now + self.tick

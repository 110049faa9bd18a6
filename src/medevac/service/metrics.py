"""One controller's Prometheus metrics: a registry of its own, read at scrape time.

Most figures are counted by the blocks already (the monitor's datagrams, the outbox's
deliveries, the inspector's incidents, the cluster's view); a collector reads them when
Prometheus scrapes, so the hot paths gain no work. What nothing counted is counted
here: verdicts by kind and the detection time (from each verdict, as a verdict sink),
fencing by outcome (a wrapper around the fencer), and each fault's stage times (from
its profile, once the fault is over). One registry per controller, never the
process-wide default: tests run several controllers in one process.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from medevac import __version__
from medevac.checkpoints import Mark
from medevac.cloud.driver import CloudDriver
from medevac.inspector.incidents import IncidentState
from medevac.inspector.inspector import Inspector
from medevac.inspector.lifecycle import HostState as Lifecycle
from medevac.monitor.hosts import HostMonitor, HostState
from medevac.monitor.protocol import DropReason
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.notifier.notifier import Notifier
from medevac.profiler.profile import Profile
from medevac.recovery.fence import Fencer, FenceResult

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Seconds. Detection: a few hundred ms, seconds for a slow BMC or a quorum.
DETECTION_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2, 5, 10, 30, 60)
# Webhooks: milliseconds for the first, tens of ms for the last of 100; retries: s to min.
NOTIFICATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
# Nova and Neutron told: under a second for a few servers, seconds for 50.
CORRECTION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)
# All servers running elsewhere: seconds for a few, a minute for 50, more when retried.
RECOVERY_BUCKETS = (1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 3600)
# BMC power-off confirmed: a few reads, 0.5 s apart by default.
FENCING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60)
KEPT_FAULTS = 10_000  # faults remembered, so that each is observed once


class FaultMetrics:
    """Verdicts, detection and each fault's stage times, observed into ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.verdicts = Counter(
            "medevac_verdicts",
            "Verdicts given by this controller's monitor, by kind.",
            ["kind"],
            registry=registry,
        )
        self.detection = Histogram(
            "medevac_detection_seconds",
            "Host-loss verdicts: time to the verdict since the last heartbeat heard "
            '(since="silence", every verdict) or since the fault as its reporter dated it '
            '(since="fault", when a Doctor or Alertmanager report carried the time).',
            ["since"],
            buckets=DETECTION_BUCKETS,
            registry=registry,
        )
        self.notification = Histogram(
            "medevac_notification_seconds",
            "Verdict to the first and the last webhook a consumer acknowledged, per fault "
            "(observed when the fault is over).",
            ["kind", "webhook"],
            buckets=NOTIFICATION_BUCKETS,
            registry=registry,
        )
        self.correction = Histogram(
            "medevac_state_correction_seconds",
            "Verdict to the cloud's state corrected (the last of Nova's force-down, the "
            "servers' reset and Neutron's data-plane status), per fault.",
            ["kind"],
            buckets=CORRECTION_BUCKETS,
            registry=registry,
        )
        self.recovery = Histogram(
            "medevac_recovery_seconds",
            "Verdict to the end of the host's recovery, by outcome (completed: every "
            "server running elsewhere).",
            ["outcome"],
            buckets=RECOVERY_BUCKETS,
            registry=registry,
        )
        # Shown at 0 before their first observation: rate() and increase() need the start.
        for verdict_kind in VerdictKind:
            self.verdicts.labels(verdict_kind.value)
        for since in ("silence", "fault"):
            self.detection.labels(since)
        for kind in ("host", "link", "process", "server"):
            self.correction.labels(kind)
            for webhook in ("first", "last"):
                self.notification.labels(kind, webhook)
        self.recovery.labels("completed")
        self._last_received: OrderedDict[str, float] = OrderedDict()  # trace -> last T09
        self._over: OrderedDict[str, None] = OrderedDict()  # incidents observed
        self._over_lock = threading.Lock()  # faults end in worker threads

    def on_verdict(self, verdict: Verdict) -> None:
        """A verdict sink: counted by kind; a host loss also times its detection."""
        self.verdicts.labels(verdict.kind.value).inc()
        if not verdict.kind.host_lost:
            return
        silence = verdict.evidence.get("silence_s")
        if isinstance(silence, int | float):
            self.detection.labels("silence").observe(max(0.0, silence))
        reported = verdict.evidence.get("fault_reported_at")
        if isinstance(reported, int | float):
            self.detection.labels("fault").observe(max(0.0, verdict.at - reported))

    def checkpoint(self, trace_id: str | None, name: str, at: float) -> None:
        """The notifier's marks: each webhook received (T09) moves its fault's last one
        (the incident keeps only the first)."""
        if name != Mark.T09 or not trace_id:
            return
        self._last_received[trace_id] = max(at, self._last_received.get(trace_id, 0.0))
        self._last_received.move_to_end(trace_id)
        if len(self._last_received) > KEPT_FAULTS:
            self._last_received.popitem(last=False)

    def last_received(self, trace_id: str) -> float | None:
        return self._last_received.get(trace_id)

    def fault_over(
        self,
        incident_id: str,
        kind: str,
        profile: Profile,
        recovery: dict[str, Any] | None,
        last_received: float | None,
    ) -> bool:
        """A fault ended (its recovery, or its incident): its stage times are observed,
        once per incident. False when it was observed already."""
        with self._over_lock:
            if incident_id in self._over:
                return False
            self._over[incident_id] = None
            if len(self._over) > KEPT_FAULTS:
                self._over.popitem(last=False)
        stamps = profile.stamps
        verdict = stamps.get(Mark.V)
        if verdict is None:
            return True
        first = stamps.get(Mark.T09)
        if first is not None:
            self.notification.labels(kind, "first").observe(max(0.0, first - verdict))
            last = max(first, last_received or first)
            self.notification.labels(kind, "last").observe(max(0.0, last - verdict))
        told = [stamps[m] for m in (Mark.T03, Mark.T04, Mark.T05) if m in stamps]
        if told:
            self.correction.labels(kind).observe(max(0.0, max(told) - verdict))
        if recovery is not None and recovery.get("ended_at") is not None:
            end = stamps.get(Mark.R3, recovery["ended_at"])
            outcome = str(recovery.get("state", "unknown")).lower()
            self.recovery.labels(outcome).observe(max(0.0, end - verdict))
        return True


class FencingMetrics:
    """Fencing outcomes and times (registered even when recovery is off: shown at 0)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "medevac_fencing",
            "Fencing attempts through a BMC, by outcome (confirmed: power off read back; "
            "failed: not confirmed within its bound, nothing evacuated).",
            ["outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "medevac_fencing_seconds",
            "Time to fence a host (power off asked to power off confirmed, or given up).",
            buckets=FENCING_BUCKETS,
            registry=registry,
        )
        for outcome in ("confirmed", "failed"):
            self.outcomes.labels(outcome)

    def observe(self, result: FenceResult) -> None:
        self.outcomes.labels("confirmed" if result.confirmed else "failed").inc()
        self.seconds.observe(result.seconds)


class CountedFencer:
    """A fencer whose outcomes are counted: confirmed off, or not (rule 2 then holds
    the host for an operator)."""

    def __init__(self, inner: Fencer, metrics: FencingMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def fence(self, host: str) -> FenceResult:
        result = await self.inner.fence(host)
        self.metrics.observe(result)
        return result


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily, values: Iterable[tuple[str, float]]
) -> GaugeMetricFamily | CounterMetricFamily:
    for label, value in values:
        family.add_metric([label], value)
    return family


class BlocksCollector(Collector):
    """Reads the counters and sizes the blocks keep, when Prometheus scrapes."""

    def __init__(
        self,
        *,
        monitor: HostMonitor | None = None,
        inspector: Inspector | None = None,
        notifier: Notifier | None = None,
        cloud: CloudDriver | None = None,
        cluster: Callable[[], dict[str, Any]] | None = None,
        loop_lag: Callable[[], float] | None = None,
    ) -> None:
        self.monitor = monitor
        self.inspector = inspector
        self.notifier = notifier
        self.cloud = cloud
        self.cluster = cluster
        self.loop_lag = loop_lag

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "medevac_build_info", "This controller's version.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        if self.loop_lag is not None:
            yield _gauge(
                "medevac_event_loop_lag_seconds",
                "The event loop's worst lag over the last 30 s (a timer's lateness).",
                self.loop_lag(),
            )
        if self.monitor is not None:
            yield from self._monitor(self.monitor)
        if self.inspector is not None:
            yield from self._inspector(self.inspector)
        if self.notifier is not None:
            yield from self._notifier(self.notifier)
        if self.cloud is not None:
            calls = CounterMetricFamily(
                "medevac_cloud_calls",
                "Calls to the cloud's APIs, by service (compute, network, ...) and result "
                "(ok, client_error 4xx, server_error 5xx, no_answer).",
                labels=["service", "result"],
            )
            for (service, result), n in sorted(self.cloud.call_results().items()):
                calls.add_metric([service, result], n)
            yield calls
        if self.cluster is not None:
            yield from self._cluster(self.cluster())

    def _monitor(self, m: HostMonitor) -> Iterable[Metric]:
        states = Tally(w.state for w in m.hosts.values())
        yield _labelled(
            GaugeMetricFamily(
                "medevac_hosts",
                "Watched hosts by the monitor's state (UNKNOWN: no heartbeat yet).",
                labels=["state"],
            ),
            ((s.value, states.get(s, 0)) for s in HostState),
        )
        yield _counter(
            "medevac_heartbeats_received",
            "Heartbeat datagrams accepted (copies and drops apart).",
            m.received,
        )
        yield _labelled(
            CounterMetricFamily(
                "medevac_datagrams_dropped",
                "Datagrams dropped by the monitor, by reason (never a verdict).",
                labels=["reason"],
            ),
            ((r.value, m.drops.get(r, 0)) for r in DropReason),
        )
        yield _counter(
            "medevac_suspicions_cleared",
            "Suspicions that a probe's answer or a late heartbeat cleared.",
            m.suspicions_cleared,
        )
        yield _counter(
            "medevac_monitor_loop_stalls",
            "Monitor ticks that came too late to judge silence on (the loop stalled).",
            m.stalls,
        )
        yield _gauge(
            "medevac_nova_poll_failing",
            "1 while the last poll of Nova's compute services failed.",
            1 if m.nova_error else 0,
        )
        yield _labelled(
            CounterMetricFamily(
                "medevac_nova_notifications",
                "Nova's versioned notifications received, by event type.",
                labels=["event_type"],
            ),
            sorted(m.nova_events.items()),
        )

    def _inspector(self, i: Inspector) -> Iterable[Metric]:
        incidents = Tally(inc.state for inc in i.open.values())
        yield _labelled(
            GaugeMetricFamily(
                "medevac_incidents_open", "Open incidents by state.", labels=["state"]
            ),
            (
                (s.value, incidents.get(s, 0))
                for s in IncidentState
                if s is not IncidentState.CLOSED
            ),
        )
        lives = i.host_states.counts()
        yield _labelled(
            GaugeMetricFamily(
                "medevac_host_lifecycle",
                "Hosts by lifecycle state, other than UP (lost, fenced, recovering, awaiting "
                "release, ...).",
                labels=["state"],
            ),
            ((s.value, lives.get(s, 0)) for s in Lifecycle if s is not Lifecycle.UP),
        )
        t = i.topology.stats()
        yield _gauge("medevac_topology_servers", "Servers in the topology cache.", t["servers"])
        yield _gauge("medevac_topology_ports", "Ports in the topology cache.", t["ports"])
        yield _gauge(
            "medevac_topology_hosts", "Hosts with servers in the topology cache.", t["hosts"]
        )

    def _notifier(self, n: Notifier) -> Iterable[Metric]:
        out = n.outbox
        c = out.counters
        yield _labelled(
            CounterMetricFamily(
                "medevac_deliveries",
                "Webhook deliveries ended, by outcome (failed: given up after "
                "notifier.retry_for; cancelled: their alarm was deleted).",
                labels=["outcome"],
            ),
            ((o, c[o]) for o in ("delivered", "failed", "cancelled")),
        )
        yield _counter(
            "medevac_delivery_retries",
            "Webhook attempts that failed and were retried.",
            c["retried"],
        )
        yield _gauge(
            "medevac_deliveries_pending",
            "Deliveries queued or being sent (tried again until delivered or given up).",
            out.pending,
        )
        yield _gauge(
            "medevac_consumers_circuit_open",
            "Consumers whose circuit is open or half-open (they failed in a row).",
            sum(1 for b in out.breakers.values() if b.state != "closed"),
        )
        yield _gauge(
            "medevac_outbox_failing",
            "1 while the outbox's writes to the store fail (alarms wait unsent).",
            1 if out.health() else 0,
        )
        yield _gauge("medevac_alarms", "Alarms registered.", len(n.index))
        yield _counter("medevac_alarms_fired", "Alarms fired (one per matching event).", n.fired)
        yield _counter(
            "medevac_events_evaluated", "Events evaluated against the alarms.", n.evaluated
        )

    def _cluster(self, s: dict[str, Any]) -> Iterable[Metric]:
        yield _gauge(
            "medevac_cluster_members",
            "Live controllers in this controller's view of the group (itself included).",
            len(s.get("members", ())),
        )
        yield _gauge(
            "medevac_cluster_owned_hosts", "Hosts this controller owns.", len(s.get("hosts", {}))
        )
        yield _gauge(
            "medevac_cluster_isolated",
            "1 while this controller cannot reach a majority (it acts on nothing).",
            1 if s.get("isolated") or not s.get("lease_valid", True) else 0,
        )
        yield _counter(
            "medevac_cluster_claims",
            "Host ownerships claimed by this controller.",
            s.get("claims", 0),
        )
        yield _counter(
            "medevac_cluster_refused_effects",
            "Effects refused for not owning the host or holding a stale epoch.",
            s.get("refused", 0),
        )


def scraper_app(metrics: ControllerMetrics, networks: Sequence[Network]) -> Starlette:
    """GET /metrics without a token, for peers on ``networks`` only (judged on the TCP
    peer's address, never a forwarded header); 403 for any other peer, 404 elsewhere."""

    async def scrape(request: Request) -> Response:
        try:
            peer = ipaddress.ip_address(request.client.host if request.client else "")
        except ValueError:
            peer = None
        if peer is None or not any(peer in n for n in networks):
            return PlainTextResponse("not a scraper network: see metrics.scraper_networks", 403)
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])


class ControllerMetrics:
    """A controller's registry: its fault metrics, fencing counts and the blocks' read
    at scrape time; rendered in Prometheus' text format or OpenMetrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.faults = FaultMetrics(self.registry)
        self.fencing = FencingMetrics(self.registry)
        self._blocks: BlocksCollector | None = None

    def counted(self, fencer: Fencer) -> CountedFencer:
        """``fencer``, its outcomes counted in this registry."""
        return CountedFencer(fencer, self.fencing)

    def watch(self, blocks: BlocksCollector) -> None:
        """Read these blocks at each scrape (once; a later call replaces them)."""
        if self._blocks is not None:
            self.registry.unregister(self._blocks)
        self._blocks = blocks
        self.registry.register(blocks)

    @property
    def blocks(self) -> BlocksCollector | None:
        return self._blocks

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape's body and content type: OpenMetrics when ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

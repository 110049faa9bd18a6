"""The controller's metrics: detection from each verdict, a fault's stage times once it
is over, fencing and cloud calls by outcome, each controller in a registry of its own."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from medevac.checkpoints import Mark
from medevac.cloud.driver import CloudDriver
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.profiler.profile import build
from medevac.recovery.fence import FenceResult
from medevac.service.metrics import BlocksCollector, ControllerMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_each_verdict_is_counted_by_kind_and_a_host_loss_times_its_detection() -> None:
    m = ControllerMetrics()
    silent = {"silence_s": 0.31, "fault_reported_at": None}
    m.faults.on_verdict(Verdict(VerdictKind.HOST_DOWN, "h1", 100.0, silent))
    reported = {"silence_s": 0.9, "fault_reported_at": 99.2}
    m.faults.on_verdict(Verdict(VerdictKind.HOST_UNREACHABLE, "h2", 100.0, reported))
    m.faults.on_verdict(Verdict(VerdictKind.LINK_DOWN, "h3", 100.0, {}, "physnet1"))
    r = m.registry
    assert sample(r, "medevac_verdicts_total", kind="HOST_DOWN") == 1
    assert sample(r, "medevac_verdicts_total", kind="LINK_DOWN") == 1
    assert sample(r, "medevac_detection_seconds_count", since="silence") == 2
    assert abs(sample(r, "medevac_detection_seconds_sum", since="silence") - 1.21) < 1e-9
    assert sample(r, "medevac_detection_seconds_count", since="fault") == 1
    assert abs(sample(r, "medevac_detection_seconds_sum", since="fault") - 0.8) < 1e-9
    # 0.31 s falls in the 0.4 s bucket, not in the 0.3 s one.
    assert sample(r, "medevac_detection_seconds_bucket", since="silence", le="0.3") == 0
    assert sample(r, "medevac_detection_seconds_bucket", since="silence", le="0.4") == 1


def test_a_fault_over_observes_its_stage_times_from_the_verdict_once() -> None:
    m = ControllerMetrics()
    stamps = {
        Mark.T01: 10.0,
        Mark.V: 10.2,
        Mark.T02: 10.2,
        Mark.T09: 10.21,
        Mark.T03: 10.3,
        Mark.T04: 11.2,
        Mark.T05: 10.9,
        Mark.R1: 10.4,
        Mark.R2: 10.6,
        Mark.R3: 40.2,
    }
    profile = build(stamps, t00_estimate=9.9)
    recovery = {"state": "COMPLETED", "ended_at": 40.3}
    m.faults.checkpoint("trace-1", Mark.T09, 10.21)
    m.faults.checkpoint("trace-1", Mark.T09, 10.26)  # the last consumer
    m.faults.checkpoint("trace-1", Mark.T08, 10.5)  # not a reception
    last = m.faults.last_received("trace-1")
    assert last == 10.26
    assert m.faults.fault_over("inc-1", "host", profile, recovery, last)
    assert not m.faults.fault_over("inc-1", "host", profile, recovery, last)  # closed later
    r = m.registry
    first = sample(r, "medevac_notification_seconds_sum", kind="host", webhook="first")
    assert abs(first - 0.01) < 1e-9
    assert (
        abs(sample(r, "medevac_notification_seconds_sum", kind="host", webhook="last") - 0.06)
        < 1e-9
    )
    assert sample(r, "medevac_notification_seconds_count", kind="host", webhook="last") == 1
    assert abs(sample(r, "medevac_state_correction_seconds_sum", kind="host") - 1.0) < 1e-9
    assert abs(sample(r, "medevac_recovery_seconds_sum", outcome="completed") - 30.0) < 1e-9


def test_a_fault_without_webhooks_or_recovery_observes_only_what_happened() -> None:
    m = ControllerMetrics()
    profile = build({Mark.T01: 5.0, Mark.V: 5.1, Mark.T05: 5.4})
    failed = {"state": "FENCING_FAILED", "ended_at": 25.1}
    m.faults.fault_over("inc-2", "link", profile, failed, None)
    r = m.registry
    assert sample(r, "medevac_notification_seconds_count", kind="link", webhook="first") == 0
    assert abs(sample(r, "medevac_state_correction_seconds_sum", kind="link") - 0.3) < 1e-9
    assert abs(sample(r, "medevac_recovery_seconds_sum", outcome="fencing_failed") - 20.0) < 1e-9


class Bmc:
    def __init__(self, confirmed: bool) -> None:
        self.confirmed = confirmed

    async def fence(self, host: str) -> FenceResult:
        return FenceResult(self.confirmed, 3, 1.5, "BMC reports power off")


def test_fencing_is_counted_by_outcome_and_timed() -> None:
    m = ControllerMetrics()
    on = m.counted(Bmc(True))
    assert sample(m.registry, "medevac_fencing_total", outcome="failed") == 0  # shown at 0
    result = asyncio.run(on.fence("h1"))
    assert result.confirmed
    on.inner = Bmc(False)
    assert not asyncio.run(on.fence("h1")).confirmed
    r = m.registry
    assert sample(r, "medevac_fencing_total", outcome="confirmed") == 1
    assert sample(r, "medevac_fencing_total", outcome="failed") == 1
    assert sample(r, "medevac_fencing_seconds_count") == 2


def test_cloud_calls_and_the_cluster_view_are_read_at_scrape_time() -> None:
    cloud = CloudDriver("nowhere")
    m = ControllerMetrics()
    status = {"members": ["a", "b"], "hosts": {"h1": 3}, "isolated": False, "lease_valid": True}
    m.watch(BlocksCollector(cloud=cloud, cluster=lambda: status))
    cloud.results["compute", "ok"] += 2
    cloud.results["network", "no_answer"] += 1
    r = m.registry
    assert sample(r, "medevac_cloud_calls_total", service="compute", result="ok") == 2
    assert sample(r, "medevac_cloud_calls_total", service="network", result="no_answer") == 1
    assert sample(r, "medevac_cluster_members") == 2
    assert sample(r, "medevac_cluster_owned_hosts") == 1
    assert sample(r, "medevac_cluster_isolated") == 0
    status["lease_valid"] = False  # cut off: its lease ran out
    assert sample(r, "medevac_cluster_isolated") == 1


def test_two_controllers_in_one_process_keep_apart() -> None:
    a, b = ControllerMetrics(), ControllerMetrics()
    a.faults.on_verdict(Verdict(VerdictKind.HOST_DOWN, "h1", 1.0, {"silence_s": 0.2}))
    assert sample(a.registry, "medevac_verdicts_total", kind="HOST_DOWN") == 1
    assert sample(b.registry, "medevac_verdicts_total", kind="HOST_DOWN") == 0
    body, content_type = b.render(None)
    assert content_type.startswith("text/plain")
    assert b'medevac_verdicts_total{kind="HOST_DOWN"} 0.0' in body

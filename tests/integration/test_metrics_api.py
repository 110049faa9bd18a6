"""GET /metrics over a whole API: refused without an admin or reader token, in
Prometheus' text format or OpenMetrics, and its values follow what the blocks do
(heartbeats, dropped datagrams, verdicts, incidents)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from medevac.api import create_app
from medevac.checkpoints import Mark
from medevac.config import Settings
from medevac.inspector.incidents import Incident
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.service.controller import Controller
from medevac.storage import Database
from medevac.storage.records import IncidentStore, RecoveryStore
from tests.api_world import build_world
from tests.conftest import ADMIN_TOKEN, MEMBER_TOKEN, READER_TOKEN
from tests.monitor_fakes import Agents

READER = {"X-Auth-Token": READER_TOKEN}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


def test_metrics_need_an_admin_or_reader_token(settings: Settings, db: Database) -> None:
    world = build_world(settings, db)

    async def run() -> None:
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/metrics")).status_code == 401
            wrong = {"X-Auth-Token": "not-a-configured-token-42"}
            assert (await client.get("/metrics", headers=wrong)).status_code == 401
            member = {"X-Auth-Token": MEMBER_TOKEN}
            assert (await client.get("/metrics", headers=member)).status_code == 403
            for token in (READER_TOKEN, ADMIN_TOKEN):
                r = await client.get("/metrics", headers={"X-Auth-Token": token})
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
                assert "medevac_build_info" in r.text

    asyncio.run(run())


def test_metrics_speak_openmetrics_when_asked(settings: Settings, db: Database) -> None:
    world = build_world(settings, db)

    async def run() -> None:
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            accept = {"Accept": "application/openmetrics-text; version=1.0.0", **READER}
            r = await client.get("/metrics", headers=accept)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/openmetrics-text")
            assert r.text.rstrip().endswith("# EOF")
            assert "medevac_datagrams_dropped_total{reason=" in r.text

    asyncio.run(run())


def test_metrics_follow_heartbeats_drops_verdicts_and_incidents(
    settings: Settings, db: Database
) -> None:
    world = build_world(settings, db)

    async def run() -> None:
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                r = await client.get("/metrics", headers=READER)
                assert r.status_code == 200, r.text
                return samples(r.text)

            before = await scrape()
            assert value(before, "medevac_hosts", state="UNKNOWN") == 3
            assert value(before, "medevac_incidents_open", state="OPEN") == 0
            assert value(before, "medevac_deliveries_pending") == 0
            Agents(world.monitor, ["h1", "h2"]).beat(["h1", "h2"])
            world.monitor.datagram_received(b"not a heartbeat", ("127.0.0.1", 9))
            now = time.time()
            world.inspector.on_verdict(
                Verdict(VerdictKind.HOST_DOWN, "h3", now, {"raw_received_at": now - 0.05})
            )
            after = await scrape()
            assert value(after, "medevac_heartbeats_received_total") == 2
            assert value(after, "medevac_hosts", state="UP") == 2
            assert value(after, "medevac_hosts", state="UNKNOWN") == 1
            dropped = value(after, "medevac_datagrams_dropped_total", reason="malformed")
            assert (
                dropped == value(before, "medevac_datagrams_dropped_total", reason="malformed") + 1
            )
            open_now = sum(v for (name, _), v in after.items() if name == "medevac_incidents_open")
            assert open_now == 1
            assert value(after, "medevac_host_lifecycle", state="LOST") == 1
            assert value(after, "medevac_event_loop_lag_seconds") >= 0

    asyncio.run(run())


@pytest.mark.databases
def test_a_finished_fault_read_back_from_the_store_feeds_the_stage_histograms(
    settings: Settings,
) -> None:
    recovery_off = settings.recovery.model_copy(update={"enabled": False})
    ctl = Controller(settings.model_copy(update={"recovery": recovery_off}), create_app)
    try:
        ctl.db.migrate()
        inc = Incident("h1", "z", 100.0, "trace-9", recovery_id="rec-1")
        inc.faults["host:"] = 100.0
        inc.stamps = {Mark.T01: 99.9, Mark.V: 100.0, Mark.T09: 100.01, Mark.T03: 100.2}
        inc.stamps[Mark.T04] = 100.9
        IncidentStore(ctl.db).save(inc.as_dict())
        recoveries = RecoveryStore(ctl.db)
        recoveries.put("rec-1", inc.id, "h1", 2, "EVACUATING", 100.3, {})
        recoveries.put_evacuation("rec-1", "s1", "vm", "h1", result="running", at=100.5)
        recoveries.put_evacuation("rec-1", "s1", "vm", "h1", result="ok", at=129.0, ended=True)
        recoveries.put("rec-1", inc.id, "h1", 2, "COMPLETED", 130.0, {}, ended=True)
        ctl.metrics.faults.checkpoint("trace-9", Mark.T09, 100.05)  # a later consumer
        # Read from the store, as by a controller that took the fault over.
        ctl._fault_profile(inc.id, None)
        ctl._fault_profile(inc.id, None)  # its incident closing later: observed once
        r = ctl.metrics.registry

        def total(name: str, **labels: str) -> float:
            return r.get_sample_value(name, labels) or 0.0

        assert total("medevac_recovery_seconds_count", outcome="completed") == 1
        assert abs(total("medevac_recovery_seconds_sum", outcome="completed") - 29.0) < 1e-6
        notified = total("medevac_notification_seconds_sum", kind="host", webhook="last")
        assert abs(notified - 0.05) < 1e-6
        assert abs(total("medevac_state_correction_seconds_sum", kind="host") - 0.9) < 1e-6
    finally:
        asyncio.run(ctl.cloud.close())
        ctl.bmc_threads.shutdown(wait=False)
        ctl.db.dispose()

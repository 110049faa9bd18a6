"""What a Prometheus scrape costs a controller: GET /metrics rendered for a controller
of N hosts (each heard, a few lost with open incidents, ten servers and ports per host
in the topology, counters moved, every fault histogram observed), the median and tail
of many renders, alone (``prometheus_client`` over the registry) and through the API
(the route, its token check and the response, in process over ASGI).

    python bench/metrics_scrape.py [--hosts 30 3000] [--runs 200] [--api-runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from common import tail
from docs_section import write_section

from medevac.api import create_app
from medevac.cloud.driver import CloudDriver
from medevac.config import ApiConfig, ApiToken, Role, Settings, StorageConfig
from medevac.inspector.executor import ActionExecutor
from medevac.inspector.guard import ZoneGuard
from medevac.inspector.incidents import Incident
from medevac.inspector.inspector import Inspector
from medevac.inspector.journal import IncidentJournal
from medevac.inspector.lifecycle import Happening
from medevac.inspector.topology import PortInfo, ServerInfo, Topology
from medevac.monitor.hosts import HostMonitor, HostState
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode, host_key
from medevac.monitor.verdicts import Verdict, VerdictKind
from medevac.notifier.notifier import Notifier
from medevac.service.metrics import BlocksCollector, ControllerMetrics
from medevac.storage import Database
from medevac.storage.records import AlarmStore, IncidentStore, OutboxStore

KEY = b"bench-key-0123456789abcdef0123456"
TOKEN = "bench-reader-token-0123456789"  # noqa: S105 (a bench's own, in memory)
SERVERS_PER_HOST = 10
LOST_SHARE = 0.01  # of the hosts, lost with an incident open


class Nothing:
    """A verdict sink, BMC and Nova that are never asked anything here."""

    def on_verdict(self, verdict: Verdict) -> None:
        pass

    async def is_off(self, host: str) -> bool:
        return False

    async def compute_services(self) -> dict[str, dict[str, object]]:
        return {}


def controller(n: int, db: Database, settings: Settings) -> tuple[ControllerMetrics, object]:
    """The blocks of a controller of ``n`` hosts, in the state a busy day leaves them."""
    hosts = {f"host{i:05d}": f"zone{i % 4}" for i in range(n)}
    nothing = Nothing()
    monitor = HostMonitor(hosts, KEY, nothing, nothing, nothing)
    boot = os.urandom(16)
    for name in hosts:
        d = Datagram(DatagramKind.HEARTBEAT, name, 1, boot, time.time(), Checks())
        monitor.datagram_received(encode(d, host_key(KEY, name)), ("127.0.0.1", 9))
    monitor.datagram_received(b"garbage", ("127.0.0.1", 9))
    topology = Topology()
    for i, name in enumerate(hosts):
        for s in range(SERVERS_PER_HOST):
            sid = f"{i:05d}-{s:02d}"
            topology.put_server(ServerInfo(sid, f"vm{sid}", "p1", name, "active", None, {}))
            topology.put_port(PortInfo(f"port{sid}", "p1", sid, name, "net1", "physnet1", None))
    cloud = CloudDriver("nowhere")
    cloud.results["compute", "ok"] += 10 * n
    cloud.results["network", "ok"] += 10 * n
    notifier = Notifier(AlarmStore(db), OutboxStore(db))
    inspector = Inspector(
        hosts,
        topology,
        ActionExecutor(cloud),
        notifier,
        IncidentJournal(IncidentStore(db)),
        ZoneGuard(),
    )
    metrics = ControllerMetrics()
    lost = list(hosts)[: max(1, int(n * LOST_SHARE))]
    for name in lost:
        monitor.hosts[name].state = HostState.LOST
        inc = Incident(name, hosts[name], time.time(), os.urandom(8).hex())
        inspector.open[name] = inc
        inspector.host_states.happen(name, hosts[name], Happening.LOST, inc.trace_id)
        v = Verdict(VerdictKind.HOST_DOWN, name, time.time(), {"silence_s": 0.25})
        metrics.faults.on_verdict(v)
    cluster = {"members": ["a", "b", "c"], "hosts": dict.fromkeys(hosts, 1), "lease_valid": True}
    metrics.watch(
        BlocksCollector(
            monitor=monitor,
            inspector=inspector,
            notifier=notifier,
            cloud=cloud,
            cluster=lambda: cluster,
        )
    )
    app = create_app(settings, db, monitor=monitor, inspector=inspector, notifier=notifier,
                     metrics=metrics)  # fmt: skip
    return metrics, app


async def rendered(metrics: ControllerMetrics, runs: int) -> tuple[bytes, list[float]]:
    """The body, and each render's time (on the loop, as the API renders)."""
    body, _ = metrics.render(None)
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        metrics.render(None)
        took.append(time.perf_counter() - started)
    return body, took


async def through_api(app: object, runs: int) -> list[float]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    took = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        headers = {"X-Auth-Token": TOKEN}
        assert (await client.get("/metrics", headers=headers)).status_code == 200
        for _ in range(runs):
            started = time.perf_counter()
            r = await client.get("/metrics", headers=headers)
            took.append(time.perf_counter() - started)
            assert r.status_code == 200
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[30, 3000])
    parser.add_argument("--runs", type=int, default=200, help="renders per size")
    parser.add_argument("--api-runs", type=int, default=100, help="GET /metrics per size")
    parser.add_argument("--write-docs", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = Settings(
            storage=StorageConfig(url=url),
            api=ApiConfig(
                tokens=[ApiToken(name="prom", token=TOKEN, role=Role.READER)],
                rate_limit=0,  # each GET is timed, not throttled
            ),
        )
        db = Database(url)
        db.migrate()
        for n in args.hosts:
            metrics, app = controller(n, db, settings)
            body, renders = asyncio.run(rendered(metrics, args.runs))
            api = asyncio.run(through_api(app, args.api_runs))
            rname, rtail = tail(renders)
            aname, atail = tail(api)
            lines = len(body.splitlines())
            print(
                f"{n} hosts: {len(body):,} bytes, {lines:,} lines; "
                f"render median {statistics.median(renders) * 1000:.2f} ms, "
                f"{rname} {rtail * 1000:.2f} ms ({len(renders)} runs); "
                f"GET /metrics median {statistics.median(api) * 1000:.2f} ms, "
                f"{aname} {atail * 1000:.2f} ms ({len(api)} runs)"
            )
            rows.append(
                f"| {n} | {len(body):,} bytes, {lines:,} lines | "
                f"{statistics.median(renders) * 1000:.2f} ms, {rname} "
                f"{rtail * 1000:.2f} ms ({len(renders)}) | "
                f"{statistics.median(api) * 1000:.2f} ms, {aname} {atail * 1000:.2f} ms "
                f"({len(api)}) |"
            )
        db.dispose()
    if args.write_docs:
        body_md = "\n".join(
            [
                "| hosts | the scrape | render alone: median, tail (runs) | GET /metrics "
                "in process: median, tail (runs) |",
                "|---|---|---|---|",
                *rows,
            ]
        )
        write_section(args.write_docs, "metrics-scrape", body_md)


if __name__ == "__main__":
    main()

"""Heartbeat benchmarks on loopback: a false-positive soak and the ingest capacity.

soak:   N agents (the real agent code) send every 100 ms, twice each, through a lossy
        link (each datagram lost with probability --loss, delayed by up to --jitter);
        the real host monitor runs in its own process. Any host verdict is a false
        positive: every host stays alive the whole time.
ingest: one sender signs and sends heartbeats for --hosts hosts at --rate Hz; the
        monitor's CPU use (its process's user+system time) is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import os
import random
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from docs_section import write_section

from medevac.agent.agent import Agent, AgentConfig
from medevac.monitor.hosts import HostMonitor, MonitorSettings
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode, host_key
from medevac.monitor.udp import open_draining_endpoint
from medevac.monitor.verdicts import Verdict

KEY = b"bench-key-0123456789abcdef"


class Collect:
    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []

    def on_verdict(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)


class AlwaysOn:
    async def is_off(self, host: str) -> bool:
        return False  # every host is alive in these benchmarks


class NoNova:
    async def compute_services(self) -> dict[str, dict[str, Any]]:
        return {}


def run_monitor(
    port: int, hosts: int, stop: Any, out: Any, interval: float, endpoint: str = "draining"
) -> None:
    async def main() -> None:
        sink = Collect()
        monitor = HostMonitor(
            {f"h{i}": "z" for i in range(hosts)},
            KEY,
            sink,
            AlwaysOn(),
            NoNova(),
            MonitorSettings(interval=interval, bmc_refresh=0, nova_refresh=3600),
        )
        transport: asyncio.BaseTransport
        if endpoint == "draining":  # the controller's own
            transport = await open_draining_endpoint(monitor, "127.0.0.1", port)
        else:  # asyncio's: one datagram per turn of the loop (the baseline)
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: monitor, local_addr=("127.0.0.1", port)
            )
        task = asyncio.create_task(monitor.run())
        gc.freeze()  # as the controller does: long-lived state out of the collector's way
        # Report the moment the senders stop: the silence after them is not a fault.
        await asyncio.to_thread(stop.wait)
        task.cancel()
        transport.close()
        out.put(
            {
                "verdicts": [(v.kind.value, v.host) for v in sink.verdicts],
                "counters": monitor.counters(),
            }
        )

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LossyAgent(Agent):
    """The real agent, behind a link that loses and delays datagrams."""

    def __init__(self, *args: Any, loss: float, jitter: float, rng: random.Random) -> None:
        super().__init__(*args)
        self.loss, self.jitter, self.rng = loss, jitter, rng

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.rng.random() < self.loss:
            return
        delay = self.rng.uniform(0, self.jitter)
        asyncio.get_running_loop().call_later(delay, super()._send, data, addr)


class Fixed:
    def checks(self) -> Checks:
        return Checks()


def soak(hosts: int, seconds: float, loss: float, jitter: float) -> dict[str, Any]:
    port = free_udp_port()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    child = ctx.Process(target=run_monitor, args=(port, hosts, stop, out, 0.1))
    child.start()
    time.sleep(1.0)
    rng = random.Random(7)

    async def agents() -> None:
        tasks = [
            asyncio.create_task(
                LossyAgent(
                    AgentConfig(
                        f"h{i}",
                        (("127.0.0.1", port),),
                        host_key(KEY, f"h{i}"),
                        bind=("127.0.0.1", 0),
                    ),
                    Fixed(),
                    loss=loss,
                    jitter=jitter,
                    rng=rng,
                ).run()
            )
            for i in range(hosts)
        ]
        await asyncio.sleep(seconds)
        stop.set()
        for t in tasks:
            t.cancel()

    asyncio.run(agents())
    result: dict[str, Any] = out.get(timeout=60)
    child.join(10)
    host_verdicts = [v for v in result["verdicts"] if v[0] in ("HOST_DOWN", "HOST_UNREACHABLE")]
    return {
        "hosts": hosts,
        "seconds": seconds,
        "loss": loss,
        "jitter_ms": jitter * 1000,
        "heartbeats": result["counters"]["received"],
        "suspicions_cleared_by_probes": result["counters"]["suspicions_cleared"],
        "false_positive_verdicts": len(host_verdicts),
        "other_verdicts": len(result["verdicts"]) - len(host_verdicts),
        "loop_lag_ms": result["counters"]["loop_lag_ms"],
    }


def ingest(hosts: int, rate: float, seconds: float, endpoint: str = "draining") -> dict[str, Any]:
    port = free_udp_port()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    child = ctx.Process(target=run_monitor, args=(port, hosts, stop, out, 1.0 / rate, endpoint))
    child.start()
    time.sleep(1.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    boots = [os.urandom(16) for _ in range(hosts)]
    names = [f"h{i}" for i in range(hosts)]
    keys = [host_key(KEY, name) for name in names]
    period = 1.0 / rate
    seq = 0
    sent = 0
    start = time.monotonic()
    cpu0 = cpu_seconds(child.pid)  # type: ignore[arg-type]
    while time.monotonic() - start < seconds:
        seq += 1
        round_start = time.monotonic()
        for i in range(hosts):
            d = Datagram(DatagramKind.HEARTBEAT, names[i], seq, boots[i], time.time())
            sock.sendto(encode(d, keys[i]), ("127.0.0.1", port))
            sent += 1
            if i % 500 == 499:  # spread each round over the period, as real hosts are
                time.sleep(max(0.0, (period * (i + 1) / hosts) - (time.monotonic() - round_start)))
        time.sleep(max(0.0, period - (time.monotonic() - round_start)))
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(child.pid) - cpu0  # type: ignore[arg-type]
    stop.set()
    result: dict[str, Any] = out.get(timeout=60)
    child.join(10)
    sock.close()
    return {
        "endpoint": endpoint,
        "hosts": hosts,
        "rate_hz": rate,
        "sent": sent,
        "received": result["counters"]["received"],
        "monitor_cpu_pct_of_one_core": 100 * cpu / elapsed,
        "false_positive_verdicts": sum(
            1 for v in result["verdicts"] if v[0] in ("HOST_DOWN", "HOST_UNREACHABLE")
        ),
        "loop_lag_ms": result["counters"]["loop_lag_ms"],
    }


def ingest_ab(hosts: int, seconds: float, runs: int) -> dict[str, Any]:
    """The controller's draining endpoint against asyncio's own transport, alternated
    in the same process run so that both see the same machine."""
    by: dict[str, list[dict[str, Any]]] = {"asyncio": [], "draining": []}
    for _ in range(runs):
        for endpoint in by:
            g = ingest(hosts, 1.0, seconds, endpoint)
            print("ingest:", g, flush=True)
            by[endpoint].append(g)

    def summary(runs_: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "cpu_pct": statistics.median(g["monitor_cpu_pct_of_one_core"] for g in runs_),
            "received": sum(g["received"] for g in runs_),
            "sent": sum(g["sent"] for g in runs_),
            "lag_p99_ms": max(g["loop_lag_ms"]["p99"] for g in runs_),
            "false": sum(g["false_positive_verdicts"] for g in runs_),
        }

    out: dict[str, Any] = {name: summary(r) for name, r in by.items()}
    out["ratio"] = out["draining"]["cpu_pct"] / max(out["asyncio"]["cpu_pct"], 1e-9)
    out["hosts"], out["runs"], out["seconds"] = hosts, runs, seconds
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--soak-seconds", type=float, default=600)
    p.add_argument("--soak-hosts", type=int, default=50)
    p.add_argument("--ingest-hosts", type=int, default=10_000)
    p.add_argument("--ingest-seconds", type=float, default=20)
    p.add_argument("--ingest-runs", type=int, default=3, help="runs of each endpoint")
    p.add_argument("--write-docs", type=Path)
    p.add_argument("--section", default="heartbeats", help="the docs section name")
    args = p.parse_args()
    s = soak(args.soak_hosts, args.soak_seconds, loss=0.05, jitter=0.02)
    print("soak:", s, flush=True)
    g = ingest_ab(args.ingest_hosts, args.ingest_seconds, args.ingest_runs)
    print("ingest summary:", g, flush=True)
    if args.write_docs:
        # The loop lag's p99 is the monitor's own summary of its last 1000 ticks, 10 ms
        # apart: several hundred of them even in the shortest run here (5 s of ingest).
        rows = [
            "| run | figures |",
            "|---|---|",
            f"| soak: {s['hosts']} hosts, {s['seconds']:.0f} s, {s['loss']:.0%} loss per "
            f"datagram, up to {s['jitter_ms']:.0f} ms jitter | {s['heartbeats']} heartbeats; "
            f"**{s['false_positive_verdicts']} false host verdicts**; "
            f"{s['suspicions_cleared_by_probes']} suspicions cleared by probes; "
            f"loop lag p99 {s['loop_lag_ms']['p99']} ms |",
        ]
        for name, label in (
            ("draining", "the controller's endpoint (drains up to 64 datagrams a wake-up)"),
            ("asyncio", "baseline: asyncio's datagram transport (one datagram a turn)"),
        ):
            r = g[name]
            rows.append(
                f"| ingest: {g['hosts']} hosts at 1 Hz, {label}; median of {g['runs']} "
                f"runs of {g['seconds']:.0f} s | {r['received']} of {r['sent']} received; "
                f"monitor CPU **{r['cpu_pct']:.0f} % of one core**; loop lag p99 (worst "
                f"run) {r['lag_p99_ms']} ms; {r['false']} false host verdicts |"
            )
        rows.append(
            f"| ingest: CPU ratio, controller's endpoint / baseline | **{g['ratio']:.2f}** |"
        )
        write_section(args.write_docs, args.section, "\n".join(rows))


if __name__ == "__main__":
    main()

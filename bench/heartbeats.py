"""Heartbeat benchmarks on loopback: false-positive soaks and the ingest capacity.

soak:    N agents (the real agent code) send every 100 ms, twice each, through a lossy
         link (each datagram lost with probability 5 %, delayed by up to 20 ms); the
         real host monitor runs in its own process. Any host verdict is a false
         positive: every host stays alive the whole time.
bursty:  the same soak, each link's losses from a two-state (Gilbert-Elliott) model:
         a good state that loses nothing, a bad one that loses most datagrams, so
         that losses come in bursts of several consecutive datagrams, 5 % on average;
         with one controller, and with three (every agent sends to each through a link
         of its own; a verdict needs the quorum's majority, as with several controllers).
ingest:  one sender signs and sends heartbeats for --ingest-hosts hosts at 1 Hz; the
         monitor's CPU use (its process's user+system time) is measured.
cluster: --cluster-hosts hosts at 1 Hz, each heartbeat sent to every one of C
         monitor processes (C from --ingest-controllers), each owning its share of
         the hosts by the controllers' rendezvous hash, as several controllers do;
         each monitor's CPU, what it received of what was sent, and the senders' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing as mp
import os
import queue
import random
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import cpu_ticks, tail, wait_quiet
from docs_section import write_section

from medevac.agent.agent import Agent, AgentConfig
from medevac.cluster.quorum import Decision, decide
from medevac.cluster.ring import shares
from medevac.monitor.hosts import HostMonitor, MonitorSettings
from medevac.monitor.protocol import Checks, Datagram, DatagramKind, encode, host_key
from medevac.monitor.udp import open_draining_endpoint
from medevac.monitor.verdicts import Verdict

KEY = b"bench-key-0123456789abcdef"
STALL = 0.05  # the agents' loop this late (s) counts as a stall of their process


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
    port: int,
    hosts: int,
    stop: Any,
    out: Any,
    interval: float,
    endpoint: str = "draining",
    owned: list[str] | None = None,
    ready: Any = None,
    probe_timeout: float | None = None,
) -> None:
    """The host monitor in this process until ``stop``; ``owned``: the hosts it owns
    (None: all of them, as a single controller does); ``ready`` is set once it
    listens; ``probe_timeout``: None for the product's. Puts its verdicts (kind, host,
    wall-clock time, silence judged) and counters on ``out``."""

    async def main() -> None:
        sink = Collect()
        owns: Callable[[str], bool] | None = None
        if owned is not None:
            owns = frozenset(owned).__contains__  # the controller's is a dict lookup too
        monitor = HostMonitor(
            {f"h{i}": "z" for i in range(hosts)},
            KEY,
            sink,
            AlwaysOn(),
            NoNova(),
            MonitorSettings(
                interval=interval,
                bmc_refresh=0,
                nova_refresh=3600,
                probe_timeout=probe_timeout or MonitorSettings.probe_timeout,
            ),
            owns=owns,
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
        if ready is not None:
            ready.set()
        # Report the moment the senders stop: the silence after them is not a fault.
        await asyncio.to_thread(stop.wait)
        if ready is not None:
            # What the senders sent is read to the end (the count stops moving) before
            # the counters are reported: 1 Hz heartbeats leave a second before suspicion.
            seen, until = -1, time.monotonic() + 10
            while (now := arrived(monitor)) != seen and time.monotonic() < until:
                seen = now
                await asyncio.sleep(0.05)
        task.cancel()
        kernel_drops = udp_drops(port)  # while the socket is still open
        transport.close()
        out.put(
            {
                "kernel_drops": kernel_drops,
                "verdicts": [
                    (v.kind.value, v.host, v.at, v.evidence.get("silence_s")) for v in sink.verdicts
                ],
                "counters": monitor.counters(),
                "owned": len(owned) if owned is not None else hosts,
            }
        )

    asyncio.run(main())


class LocalQuorum:
    """The controllers' quorum over monitors in this process: a peer's answer is what its
    ``/v1/cluster/silence`` says (``silence_of``), the decision the product's own, with
    the controller's slack and floor; only the HTTP hop on loopback is left out."""

    def __init__(self, me: str, monitors: dict[str, HostMonitor], interval: float) -> None:
        self.me, self.monitors, self.interval = me, monitors, interval
        self.heard_elsewhere = 0

    async def ask(self, host: str) -> dict[str, float | None]:
        answers: dict[str, float | None] = {}
        for name, peer in self.monitors.items():
            if name != self.me:
                silence = peer.silence_of(host)
                answers[name] = math.inf if silence is None else silence
        return answers

    def decide(self, suspect_after: float, answers: dict[str, float | None]) -> Decision:
        decision = decide(suspect_after, answers, self.interval, 1.5 * self.interval)
        self.heard_elsewhere += decision.agreement.value == "heard-elsewhere"
        return decision


def run_quorum_monitors(
    ports: list[int], hosts: int, stop: Any, out: Any, interval: float, probe_timeout: float
) -> None:
    """One monitor per port in this process, each owning its share of the hosts by the
    rendezvous hash and judging only with its peers' majority; reports as run_monitor."""

    async def main() -> None:
        names = [f"controller-{i + 1}" for i in range(len(ports))]
        hostnames = [f"h{i}" for i in range(hosts)]
        owned = shares(hostnames, names)
        monitors: dict[str, HostMonitor] = {}
        sinks: dict[str, Collect] = {}
        quorums: dict[str, LocalQuorum] = {}
        for name in names:
            sinks[name] = Collect()
            quorums[name] = LocalQuorum(name, monitors, interval)
            monitors[name] = HostMonitor(
                {h: "z" for h in hostnames},
                KEY,
                sinks[name],
                AlwaysOn(),
                NoNova(),
                MonitorSettings(
                    interval=interval,
                    bmc_refresh=0,
                    nova_refresh=3600,
                    probe_timeout=probe_timeout,
                ),
                owns=frozenset(owned[name]).__contains__,
                quorum=quorums[name],
            )
        transports = [
            await open_draining_endpoint(monitors[name], "127.0.0.1", port)
            for name, port in zip(names, ports, strict=True)
        ]
        tasks = [asyncio.create_task(m.run()) for m in monitors.values()]
        gc.freeze()
        await asyncio.to_thread(stop.wait)
        for t in tasks:
            t.cancel()
        for transport in transports:
            transport.close()
        counters = [m.counters() for m in monitors.values()]
        out.put(
            {
                "verdicts": [
                    (v.kind.value, v.host, v.at, v.evidence.get("silence_s"))
                    for sink in sinks.values()
                    for v in sink.verdicts
                ],
                "counters": {
                    "received": sum(c["received"] for c in counters),
                    "suspicions_cleared": sum(c["suspicions_cleared"] for c in counters),
                    "loop_lag_ms": max(
                        (c["loop_lag_ms"] for c in counters), key=lambda lag: lag["p99"]
                    ),
                },
                "heard_elsewhere": sum(q.heard_elsewhere for q in quorums.values()),
            }
        )

    asyncio.run(main())


def arrived(monitor: HostMonitor) -> int:
    """Every datagram the monitor read: taken, copies, and dropped for any reason."""
    return monitor.received + monitor.copies + sum(monitor.drops.values())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Independent:
    """Each datagram lost with probability ``loss``, whatever came before."""

    def __init__(self, loss: float, rng: random.Random) -> None:
        self.loss, self.rng = loss, rng
        self.sent = self.lost = self.bursts = 0
        self._lost_last = False

    def lose(self) -> bool:
        return self.count(self.rng.random() < self.loss)

    def count(self, lost: bool) -> bool:
        """Counts one datagram: losses, and bursts (runs of consecutive losses)."""
        self.sent += 1
        if lost:
            self.lost += 1
            self.bursts += not self._lost_last
        self._lost_last = lost
        return lost


@dataclass(frozen=True)
class GilbertElliott:
    """A two-state loss model, advanced once per datagram: in the good state a datagram
    is lost with ``good_loss``, in the bad one with ``bad_loss``; the bad state lasts
    ``bad_stay`` datagrams on average, and comes often enough that the long-run loss is
    ``average``."""

    average: float = 0.05
    good_loss: float = 0.0
    bad_loss: float = 0.9
    bad_stay: float = 6.0

    @property
    def bad_share(self) -> float:  # the long-run share of datagrams in the bad state
        return (self.average - self.good_loss) / (self.bad_loss - self.good_loss)

    @property
    def bad_to_good(self) -> float:
        return 1.0 / self.bad_stay

    @property
    def good_to_bad(self) -> float:
        return self.bad_share * self.bad_to_good / (1.0 - self.bad_share)

    @property
    def mean_burst(self) -> float:
        """The expected run of consecutive losses (exact when ``good_loss`` is 0)."""
        return 1.0 / (1.0 - (1.0 - self.bad_to_good) * self.bad_loss)


class Bursty(Independent):
    """One link's Gilbert-Elliott state: each agent has its own."""

    def __init__(self, model: GilbertElliott, rng: random.Random) -> None:
        super().__init__(model.average, rng)
        self.model = model
        self.bad = rng.random() < model.bad_share  # from the long-run distribution

    def lose(self) -> bool:
        m, rng = self.model, self.rng
        if rng.random() < (m.bad_to_good if self.bad else m.good_to_bad):
            self.bad = not self.bad
        return self.count(rng.random() < (m.bad_loss if self.bad else m.good_loss))


class LossyAgent(Agent):
    """The real agent, behind links (one per controller's port) that lose and delay
    datagrams."""

    def __init__(
        self, *args: Any, links: dict[int, Independent], jitter: float, rng: random.Random
    ) -> None:
        super().__init__(*args)
        self.links, self.jitter, self.rng = links, jitter, rng

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.links[addr[1]].lose():
            return
        delay = self.rng.uniform(0, self.jitter)
        asyncio.get_running_loop().call_later(delay, super()._send, data, addr)


class Fixed:
    def checks(self) -> Checks:
        return Checks()


def soak(
    hosts: int,
    seconds: float,
    loss: float,
    jitter: float,
    bursts: GilbertElliott | None = None,
    probe_timeout: float | None = None,
    controllers: int = 1,
) -> dict[str, Any]:
    """Independent losses of ``loss`` per datagram, or with ``bursts`` that model's;
    ``controllers``: monitors, each hearing every agent through a link of its own."""
    ports = [free_udp_port() for _ in range(controllers)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    timeout = probe_timeout or MonitorSettings.probe_timeout
    child = ctx.Process(
        target=run_monitor if controllers == 1 else run_quorum_monitors,
        args=(ports[0] if controllers == 1 else ports, hosts, stop, out, 0.1),
        kwargs={"probe_timeout": timeout},
        daemon=True,  # never left behind by a failure here
    )
    child.start()
    time.sleep(1.0)
    rng = random.Random(7)
    links = [
        {port: Independent(loss, rng) if bursts is None else Bursty(bursts, rng) for port in ports}
        for _ in range(hosts)
    ]

    # The agents' own process stalling (a loaded machine) silences every link at once:
    # no quorum can tell that from a dead host, and real hosts do not share one loop.
    stalls: list[tuple[float, float]] = []

    async def watch_lag(step: float = 0.01) -> None:
        last = time.time()
        while True:
            await asyncio.sleep(step)
            now = time.time()
            if now - last > step + STALL:
                stalls.append((last, now))
            last = now

    async def agents() -> None:
        lag = asyncio.create_task(watch_lag())
        tasks = [
            asyncio.create_task(
                LossyAgent(
                    AgentConfig(
                        f"h{i}",
                        tuple(("127.0.0.1", port) for port in ports),
                        host_key(KEY, f"h{i}"),
                        bind=("127.0.0.1", 0),
                    ),
                    Fixed(),
                    links=links[i],
                    jitter=jitter,
                    rng=rng,
                ).run()
            )
            for i in range(hosts)
        ]
        await asyncio.sleep(seconds)
        stop.set()
        for t in [*tasks, lag]:
            t.cancel()

    asyncio.run(agents())
    result: dict[str, Any] = out.get(timeout=60)
    child.join(10)
    host_verdicts = [v for v in result["verdicts"] if v[0] in ("HOST_DOWN", "HOST_UNREACHABLE")]
    every_link = [link for per_host in links for link in per_host.values()]
    sent = sum(link.sent for link in every_link)
    lost = sum(link.lost for link in every_link)
    out_: dict[str, Any] = {
        "controllers": controllers,
        "verdicts_refused_heard_elsewhere": result.get("heard_elsewhere", 0),
        "hosts": hosts,
        "seconds": seconds,
        "loss": loss,
        "jitter_ms": jitter * 1000,
        "heartbeats": result["counters"]["received"],
        "suspicions_cleared_by_probes": result["counters"]["suspicions_cleared"],
        "false_positive_verdicts": len(host_verdicts),
        "other_verdicts": len(result["verdicts"]) - len(host_verdicts),
        "loop_lag_ms": result["counters"]["loop_lag_ms"],
        "datagrams": sent,
        "measured_loss": lost / max(1, sent),
        "measured_mean_burst": lost / max(1, sum(link.bursts for link in every_link)),
    }
    if bursts is not None:
        out_["model"] = {
            "good_loss": bursts.good_loss,
            "bad_loss": bursts.bad_loss,
            "p_good_to_bad": round(bursts.good_to_bad, 5),
            "p_bad_to_good": round(bursts.bad_to_good, 5),
            "expected_mean_burst": round(bursts.mean_burst, 2),
        }
    out_["probe_timeout_ms"] = 1000 * timeout
    # Each false verdict's whole silence: from the last datagram heard before it to the
    # heartbeat that brought the host back (its HOST_UP), in seconds.
    silences = []
    for _kind, host, at, silence in host_verdicts:
        back = [
            v[2] for v in result["verdicts"] if v[0] == "HOST_UP" and v[1] == host and v[2] > at
        ]
        if back and silence is not None:
            silences.append(min(back) - at + silence)
    out_["false_verdict_silences_s"] = sorted(round(x, 3) for x in silences)
    out_["agents_stalls"] = len(stalls)
    out_["agents_worst_stall_ms"] = round(max((b - a for a, b in stalls), default=0) * 1000)
    out_["false_verdicts_in_agents_stall"] = sum(
        any(a < at and b > at - (silence or 0) for a, b in stalls)
        for _kind, _host, at, silence in host_verdicts
    )
    out_["false_verdict_hosts"] = len({v[1] for v in host_verdicts})
    return out_


def ingest(hosts: int, rate: float, seconds: float, endpoint: str = "draining") -> dict[str, Any]:
    port = free_udp_port()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop, ready = ctx.Event(), ctx.Event()
    child = ctx.Process(
        target=run_monitor,
        args=(port, hosts, stop, out, 1.0 / rate, endpoint),
        kwargs={"ready": ready},  # and it reads what was sent to the end before it reports
        daemon=True,
    )
    child.start()
    if not ready.wait(120):
        raise RuntimeError("the monitor did not start within 120 s")
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


MEMBERS = ("controller-1", "controller-2", "controller-3", "controller-4", "controller-5")


def run_sender(
    index: int,
    senders: int,
    hosts: int,
    rate: float,
    seconds: float,
    ports: list[int],
    loaded: Any,
    starts: Any,
    ready: Any,
    out: Any,
) -> None:
    """Hosts ``index``, ``index + senders``, ... : every heartbeat to every port.

    Once ``loaded``, the sender is told on ``starts`` when it is to start (wall clock)
    and signs every heartbeat before then, each with the time it is due to leave: every
    host signs its own on its own CPU, so signing is no load the controllers' machine
    would see; what is left in the window is the network's part. Once ``ready``, it is
    told on ``starts`` when it starts in fact (later, if some sender signed late). Each
    round is spread over the period, as real hosts are."""
    mine = range(index, hosts, senders)
    names = [f"h{i}" for i in mine]
    keys = [host_key(KEY, name) for name in names]
    boots = [os.urandom(16) for _ in names]
    loaded.set()
    planned: float = starts.get(timeout=120)
    n, period = len(names), 1.0 / rate
    rounds = math.ceil(seconds * rate)
    offsets = [period * j / n for j in range(n)]
    signed = [
        [
            encode(
                Datagram(
                    DatagramKind.HEARTBEAT, names[j], r + 1, boots[j], planned + r * period + o
                ),
                keys[j],
            )
            for j, o in enumerate(offsets)
        ]
        for r in range(rounds)
    ]
    socks = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(("127.0.0.1", port))  # as an agent's: no address to parse per datagram
        socks.append(sock.send)
    batch = max(1, n // 100)  # 100 bursts a round: about 10 ms apart at 1 Hz
    ready.set()
    go_at: float = starts.get(timeout=300)
    late = 0.0  # the furthest behind schedule a batch left (s)
    sent = 0
    go = time.monotonic() + (go_at - time.time())
    for r, round_ in enumerate(signed):
        start = go + r * period
        for b in range(0, n, batch):
            behind = time.monotonic() - (start + offsets[b])
            if behind < 0:
                time.sleep(-behind)
            late = max(late, behind)
            for data in round_[b : b + batch]:
                for send in socks:
                    send(data)
            sent += min(batch, n - b)
    out.put({"index": index, "heartbeats": sent, "late_s": late})


def udp_drops(port: int) -> int:
    """What the kernel dropped for a full receive queue on 127.0.0.1:``port``."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want:
            return int(fields[-1])
    return 0


def cluster_ingest(
    controllers: int, hosts: int, rate: float, seconds: float, senders: int
) -> dict[str, Any]:
    """Every heartbeat of ``hosts`` hosts to each of ``controllers`` monitors, each
    owning its share (the rendezvous hash over the members, as the controllers do)."""
    ctx = mp.get_context("spawn")
    members = MEMBERS[:controllers]
    names = [f"h{i}" for i in range(hosts)]
    owned = shares(names, members) if controllers > 1 else {members[0]: set(names)}
    stop = ctx.Event()
    monitors = []
    sending: list[Any] = []
    try:
        for member in members:
            port, out, ready = free_udp_port(), ctx.Queue(), ctx.Event()
            proc = ctx.Process(
                target=run_monitor,
                args=(port, hosts, stop, out, 1.0 / rate),
                kwargs={"owned": sorted(owned[member]), "ready": ready},
                daemon=True,
            )
            proc.start()
            monitors.append((member, port, out, ready, proc))
        sender_out = ctx.Queue()
        starts = [ctx.Queue() for _ in range(senders)]
        loaded = [ctx.Event() for _ in range(senders)]
        readies = [ctx.Event() for _ in range(senders)]
        for i in range(senders):
            sending.append(
                ctx.Process(
                    target=run_sender,
                    args=(i, senders, hosts, rate, seconds, [m[1] for m in monitors]),
                    kwargs={
                        "loaded": loaded[i],
                        "starts": starts[i],
                        "ready": readies[i],
                        "out": sender_out,
                    },
                    daemon=True,
                )
            )
            sending[-1].start()
        for what, event in [(f"the monitor of {m[0]}", m[3]) for m in monitors] + [
            (f"sender {i}", e) for i, e in enumerate(loaded)
        ]:
            if not event.wait(120):
                raise RuntimeError(f"{what} did not start within 120 s")
        # The senders sign for a start that allows three times what signing costs here
        # now, shared by the machine's two cores; if they take longer, they start later
        # than their heartbeats say (by ``signed_early_s``: the monitors take datagrams
        # up to 5 s off their clock, and judge arrivals by their own).
        key, t = host_key(KEY, "h0"), time.perf_counter()
        for seq in range(2000):
            encode(Datagram(DatagramKind.HEARTBEAT, "h0", seq, bytes(16), time.time()), key)
        each = (time.perf_counter() - t) / 2000
        planned = time.time() + 1.0 + 3 * each * hosts * math.ceil(seconds * rate) / 2
        for q in starts:
            q.put(planned)
        for i, event in enumerate(readies):
            if not event.wait(300):
                raise RuntimeError(f"sender {i} did not sign its heartbeats within 300 s")
        go_at = max(planned, time.time() + 0.2)
        if go_at - planned > 2.5:
            raise RuntimeError(
                f"the senders signed {go_at - planned:.1f} s late: the machine is too busy"
            )
        for q in starts:
            q.put(go_at)
        pids = [m[4].pid for m in monitors] + [p.pid for p in sending]
        time.sleep(max(0.0, go_at - time.time()))
        cpu0, machine0 = [cpu_seconds(pid) for pid in pids], cpu_ticks()
        t0 = time.monotonic()
        time.sleep(max(0.0, go_at + seconds - time.time()))
        cpu1, machine1 = [cpu_seconds(pid) for pid in pids], cpu_ticks()
        window = time.monotonic() - t0
        sent_by = [sender_out.get(timeout=60 + seconds) for _ in sending]
        stop.set()
        results = [report(m[2], len(owned[m[0]])) for m in monitors]
        for proc in sending:
            proc.join(10)
        for m in monitors:
            m[4].join(10)
    finally:
        stop.set()  # on a failure too: nothing is left running
        for proc in [m[4] for m in monitors] + sending:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
    cpu = [100 * (b - a) / window for a, b in zip(cpu0, cpu1, strict=True)]
    sent = sum(s["heartbeats"] for s in sent_by)
    per_monitor = []
    # A host verdict before the senders stopped, or within a period after (too soon for
    # their stop: the detector's threshold is at least two periods of silence, its
    # deviation floored at a fifth of one), is a false one; later ones judge the stop.
    end = go_at + seconds + 1.0 / rate
    for (member, *_), result, pct in zip(monitors, results, cpu, strict=False):
        c = result["counters"]
        lost = [v for v in result["verdicts"] if v[0] in ("HOST_DOWN", "HOST_UNREACHABLE")]
        per_monitor.append(
            {
                "member": member,
                "owned": result["owned"],
                "sent": sent,
                "read": c["received"] + c["copies"] + sum(c["dropped"].values()),
                "taken": c["received"],
                "kernel_drops": result["kernel_drops"],
                "cpu_pct": pct,
                "loop_lag_ms": c["loop_lag_ms"],
                "loop_stalls": c["loop_stalls"],
                "false_verdicts": sum(1 for v in lost if v[2] < end),
                "verdicts_after_the_stop": sum(1 for v in lost if v[2] >= end),
                "reported": result["reported"],
            }
        )
    late = max(s["late_s"] for s in sent_by)
    return {
        "controllers": controllers,
        "hosts": hosts,
        "rate_hz": rate,
        "seconds": seconds,
        "senders": senders,
        "monitors": per_monitor,
        "sender_cpu_pct": cpu[len(monitors) :],
        "sender_late_ms": late * 1000,
        "signed_early_s": go_at - planned,
        # What the rest of the machine used meanwhile, in cores (of os.cpu_count()):
        # other work competing with the run.
        "others_cores": (machine1[0] - machine0[0]) / os.sysconf("SC_CLK_TCK") / window
        - sum(cpu) / 100,
        # A sender a tenth of a period behind, or sending short, did not keep the rate.
        "senders_kept_rate": late < 0.1 / rate and sent == hosts * math.ceil(seconds * rate),
    }


def report(out: Any, owned: int, within: float = 120.0) -> dict[str, Any]:
    """A monitor's report, or, when its loop is too swamped to give one in time, what
    says so (its CPU is read from outside, and stands)."""
    try:
        result: dict[str, Any] = out.get(timeout=within)
        return {**result, "reported": True}
    except queue.Empty:
        counters = {"received": 0, "copies": 0, "dropped": {}, "loop_stalls": None}
        return {
            "reported": False,
            "owned": owned,
            "kernel_drops": None,
            "verdicts": [],
            "counters": {**counters, "loop_lag_ms": {"p99": None}},
        }


def cluster_ab(
    counts: list[int], hosts: int, seconds: float, senders: int, runs: int, quiet_wait: float
) -> dict[str, Any]:
    """Each number of controllers in turn (alternated when ``runs`` > 1), so that all
    see the same machine; the ratio is each one's per-monitor CPU against the first's."""
    by: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
    for _ in range(runs):
        for c in counts:
            if quiet_wait > 0:
                wait_quiet(f"cluster ingest, {c} controllers", at_most=quiet_wait)
            g = cluster_ingest(c, hosts, 1.0, seconds, senders)
            print(f"cluster ingest ({c} controllers):", g, flush=True)
            by[c].append(g)
    each: dict[int, dict[str, Any]] = {}
    for c, rs in by.items():
        mons = [m for g in rs for m in g["monitors"]]
        each[c] = {
            "cpu_pct": [
                statistics.median(g["monitors"][i]["cpu_pct"] for g in rs) for i in range(c)
            ],
            "owned": [m["owned"] for m in rs[0]["monitors"]],
            "read": sum(m["read"] for m in mons),
            "sent": sum(m["sent"] for m in mons),
            "kernel_drops": sum(m["kernel_drops"] or 0 for m in mons),
            "lag_p99_ms": max(m["loop_lag_ms"]["p99"] or 0 for m in mons),
            "unreported": sum(not m["reported"] for m in mons),
            "false": sum(m["false_verdicts"] for m in mons),
            "sender_cpu_pct": statistics.median(sum(g["sender_cpu_pct"]) for g in rs),
            "sender_late_ms": max(g["sender_late_ms"] for g in rs),
            "senders_kept_rate": all(g["senders_kept_rate"] for g in rs),
            "others_cores": max(g["others_cores"] for g in rs),
        }
    base = statistics.mean(each[counts[0]]["cpu_pct"])
    for c in counts:
        each[c]["ratio"] = statistics.mean(each[c]["cpu_pct"]) / max(base, 1e-9)
    return {"hosts": hosts, "seconds": seconds, "runs": runs, "senders": senders, "by": each}


def soak_row(label: str, s: dict[str, Any]) -> str:
    row = (
        f"| {label} | {s['heartbeats']} heartbeats; measured loss {s['measured_loss']:.1%} "
        f"of {s['datagrams']} datagrams, {s['measured_mean_burst']:.2f} lost in a row on "
        f"average; **{s['false_positive_verdicts']} false host verdicts**"
    )
    silences = s["false_verdict_silences_s"]
    if silences:
        name, far = tail(silences)
        row += (
            f" ({s['false_verdict_hosts']} hosts; each ended by the host's next heartbeat, "
            f"after a silence of median {statistics.median(silences) * 1000:.0f} ms, "
            f"{name} {far * 1000:.0f} ms)"
        )
    if s["agents_stalls"]:
        row += (
            f" ({s['false_verdicts_in_agents_stall']} of them during a stall of the agents' "
            f"own process, which silences every link at once: {s['agents_stalls']} stalls "
            f"of over {STALL * 1000:.0f} ms, the worst {s['agents_worst_stall_ms']} ms)"
        )
    if s["controllers"] > 1:
        row += (
            f"; {s['verdicts_refused_heard_elsewhere']} verdicts refused by the quorum (a "
            "majority of the controllers still heard the host)"
        )
    return (
        row + f"; {s['suspicions_cleared_by_probes']} suspicions cleared by probes; "
        f"loop lag p99 {s['loop_lag_ms']['p99']} ms |"
    )


def controllers(count: int) -> str:
    if count == 1:
        return "1 controller"
    return f"{count} controllers (each its own link to every agent; the quorum's majority)"


def bursty_label(b: dict[str, Any]) -> str:
    m = b["model"]
    default = b["probe_timeout_ms"] == 1000 * MonitorSettings.probe_timeout
    return (
        f"soak, bursty, {controllers(b['controllers'])}: {b['hosts']} hosts, "
        f"{b['seconds']:.0f} s, two-state loss per link "
        f"(good: {m['good_loss']:.0%} lost, bad: {m['bad_loss']:.0%}; per datagram good to "
        f"bad {m['p_good_to_bad']}, bad to good {m['p_bad_to_good']}: {b['loss']:.0%} on "
        f"average, {m['expected_mean_burst']} lost in a row expected), up to "
        f"{b['jitter_ms']:.0f} ms jitter; probes answered within "
        f"{b['probe_timeout_ms']:.0f} ms{' (the default)' if default else ''}"
    )


def cluster_rows(k: dict[str, Any], counts: list[int]) -> list[str]:
    rows = [
        "| controllers | monitor | hosts owned | datagrams read of sent | kernel drops "
        "| monitor CPU, % of one core | loop lag p99 (worst run) | false host verdicts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in counts:
        r = k["by"][c]
        first = [f"{r['read'] // c} of {r['sent'] // c}", r["kernel_drops"], r["lag_p99_ms"]]
        if r["unreported"]:
            first[0] += f" ({r['unreported']} gave no report within 120 s: loop swamped)"
        for i in range(c):
            read, drops, lag = first if i == 0 else ["", "", ""]
            rows.append(
                f"| {c} | {MEMBERS[i] if c > 1 else 'the only one'} | {r['owned'][i]} | "
                f"{read} | {drops} | **{r['cpu_pct'][i]:.0f}** | {lag} | "
                f"{r['false'] if i == 0 else ''} |"
            )
    return rows


def cluster_intro(k: dict[str, Any], counts: list[int]) -> str:
    base = counts[0]
    lines = [
        f"Several controllers: {k['hosts']} hosts at 1 Hz, every heartbeat to each "
        f"controller's monitor, which owns its share of the hosts by the rendezvous hash "
        f"(no quorum: an owner's confirmation alone would be a verdict); median of "
        f"{k['runs']} run(s) of {k['seconds']:.0f} s for each number of controllers, in "
        f"turn; figures per monitor (read, kernel drops and verdicts: each monitor's, "
        f"summed over its runs). Per-monitor CPU against {base} controller(s): "
        + ", ".join(f"{c} controllers **{k['by'][c]['ratio']:.2f}x**" for c in counts[1:])
        + "."
    ]
    for c in counts:
        r = k["by"][c]
        kept = "kept the rate" if r["senders_kept_rate"] else "**did not keep the rate**"
        lines.append(
            f"Senders with {c}: {k['senders']} processes, together "
            f"{r['sender_cpu_pct']:.0f} % of one core, at most "
            f"{r['sender_late_ms']:.0f} ms behind schedule (every heartbeat was sent): "
            f"{kept}; other processes on the machine meanwhile: "
            f"{r['others_cores']:.2f} of its {os.cpu_count()} cores."
        )
    return " ".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description="0 seconds or runs, or no controllers: skipped")
    p.add_argument("--soak-seconds", type=float, default=600)
    p.add_argument("--soak-hosts", type=int, default=50)
    p.add_argument(
        "--bursty-seconds", type=float, help="the bursty-loss soak (default: --soak-seconds)"
    )
    p.add_argument("--bursty-bad-loss", type=float, default=GilbertElliott.bad_loss)
    p.add_argument(
        "--bursty-bad-stay",
        type=float,
        default=GilbertElliott.bad_stay,
        help="the bad state's mean length, in datagrams",
    )
    p.add_argument(
        "--bursty-probe-timeouts",
        default=str(MonitorSettings.probe_timeout),
        help="the monitor's probe timeouts (s) to soak with, in turn",
    )
    p.add_argument(
        "--bursty-controllers",
        default="1,3",
        help="numbers of controllers to soak with bursty loss, in turn (same seed each)",
    )
    p.add_argument("--ingest-hosts", type=int, default=10_000)
    p.add_argument("--ingest-seconds", type=float, default=20)
    p.add_argument("--ingest-runs", type=int, default=3, help="runs of each endpoint")
    p.add_argument(
        "--ingest-controllers",
        default="1,3",
        help="numbers of controllers the cluster ingest compares, the baseline first",
    )
    p.add_argument("--cluster-hosts", type=int, default=30_000)
    p.add_argument("--cluster-seconds", type=float, default=20)
    p.add_argument("--cluster-runs", type=int, default=1, help="runs of each number")
    p.add_argument("--cluster-senders", type=int, default=2, help="sender processes")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each cluster run, wait at most this long (s) for a quiet machine; 0: not",
    )
    p.add_argument("--write-docs", type=Path)
    p.add_argument("--section", default="heartbeats", help="the docs section name")
    args = p.parse_args()
    counts = [int(c) for c in args.ingest_controllers.split(",") if c]
    bursts = GilbertElliott(bad_loss=args.bursty_bad_loss, bad_stay=args.bursty_bad_stay)
    bursty_seconds = args.soak_seconds if args.bursty_seconds is None else args.bursty_seconds
    # The loop lag's p99 is the monitor's own summary of its last 1000 ticks, 10 ms
    # apart: several hundred of them even in the shortest run here (3 s).
    rows: list[str] = []
    if args.soak_seconds > 0:
        s = soak(args.soak_hosts, args.soak_seconds, loss=0.05, jitter=0.02)
        print("soak:", s, flush=True)
        rows.append(
            soak_row(
                f"soak: {s['hosts']} hosts, {s['seconds']:.0f} s, {s['loss']:.0%} loss per "
                f"datagram, up to {s['jitter_ms']:.0f} ms jitter",
                s,
            )
        )
    for timeout in [float(t) for t in args.bursty_probe_timeouts.split(",") if t]:
        if bursty_seconds <= 0:
            break
        for count in [int(c) for c in args.bursty_controllers.split(",") if c]:
            b = soak(
                args.soak_hosts,
                bursty_seconds,
                0.05,
                0.02,
                bursts,
                probe_timeout=timeout,
                controllers=count,
            )
            print("bursty soak:", b, flush=True)
            rows.append(soak_row(bursty_label(b), b))
    if args.ingest_runs > 0:
        g = ingest_ab(args.ingest_hosts, args.ingest_seconds, args.ingest_runs)
        print("ingest summary:", g, flush=True)
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
    if rows:
        rows[:0] = ["| run | figures |", "|---|---|"]
    if counts and args.cluster_runs > 0:
        k = cluster_ab(
            counts,
            args.cluster_hosts,
            args.cluster_seconds,
            args.cluster_senders,
            args.cluster_runs,
            args.quiet_wait,
        )
        print("cluster ingest summary:", k, flush=True)
        rows += [*([""] if rows else []), cluster_intro(k, counts), "", *cluster_rows(k, counts)]
    print("\n".join(rows), flush=True)
    if args.write_docs:
        write_section(args.write_docs, args.section, "\n".join(rows))


if __name__ == "__main__":
    main()

"""Notification and state-correction time on the lab, by servers on the failed host.

A lab whose hosts carry 100, 50, 10 and 1 servers (and one spare), a real
`medevac serve`, a consumer process with one Doctor-style alarm per server
(registered by the server's owner). Each run crashes one host (`host-crash`) and
reads the incident's checkpoints and the consumer's receive times:

- notification: the verdict (the inspector's input) to the first and the last
  webhook received; also from T01, the raw signal, which adds the monitor's
  confirmation (direct probes and the BMC read);
- state correction: the verdict to force-down + every server in error + every
  port DOWN, each call returned by the cloud (all synchronous in Nova and Neutron);
- the floor: the same calls issued one after another by a bare client (the cloud
  driver awaited call by call), measured in the same process run, between ours.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import httpx
from common import free_port, ms, start_lab, tail, tail_name, wait
from docs_section import write_chart, write_section

from medevac.cloud import CloudDriver, DataPlaneStatus
from medevac.lab.client import LabClient, lab_down, project_tokens
from medevac.lab.consumer import doctor_alarm
from medevac.lab.layout import LabPaths

DOCTOR = {1: "0.122 s", 10: "0.201 s", 25: "0.32 s", 50: "0.584 s"}  # shortcut, threads
DOCTOR_ON_LAB = {1: "0.055 s", 10: "0.41 s", 50: "2.7 s", 100: "6.6 s"}


class Bench:
    def __init__(self, paths: LabPaths, info: dict[str, Any], consumer: str) -> None:
        self.info = info
        self.lab = LabClient(paths)
        self.url = info["controller_url"]
        self.admin = {"X-Auth-Token": info["admin_token"]}
        self.consumer = consumer
        self.loop = asyncio.new_event_loop()
        self.driver = CloudDriver(info["cloud"], clouds_yaml=Path(info["clouds_yaml"]))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, headers=self.admin, timeout=30)
        r.raise_for_status()
        return r.json()

    def register_alarms(self) -> dict[str, list[str]]:
        """One alarm per server, by its owner; returns alarm ids by host."""
        tokens = project_tokens(self.info["controller_config"])
        by_host: dict[str, list[str]] = {}
        for s in self.lab.status()["servers"]:
            body = doctor_alarm(s["id"], s["name"], self.consumer + "/failure")
            r = httpx.post(
                self.url + "/v2/alarms",
                json=body,
                headers={"X-Auth-Token": tokens[s["project_id"]]},
                timeout=30,
            )
            r.raise_for_status()
            by_host.setdefault(s["host"], []).append(r.json()["alarm_id"])
        return by_host

    def one_failure(self, host: str, alarms: list[str]) -> dict[str, float]:
        for alarm_id in alarms:  # Doctor's alarms fire on a change of state
            httpx.put(
                f"{self.url}/v2/alarms/{alarm_id}/state", json="ok", headers=self.admin, timeout=30
            ).raise_for_status()
        httpx.post(self.consumer + "/_consumer/reset", timeout=10).raise_for_status()
        t0 = time.time()
        self.lab.inject("host-crash", host)
        # The first look once the alarms are out, and at the newest incident only: the
        # bench's reads take the controller's CPU from what it measures (the last
        # alarm's median was 66 ms polling from the start, 49 ms this way, 8 runs each).
        time.sleep(0.5)

        def corrected() -> dict[str, Any] | None:
            for inc in self.get(f"/v1/incidents?host={host}&limit=1")["incidents"]:
                if inc["opened_at"] >= t0 and inc["state"] in ("CORRECTED", "PARTIAL"):
                    return dict(inc)
            return None

        inc = wait(f"{host} corrected", corrected, 120, 0.1)
        if inc["state"] != "CORRECTED":
            failed = [a for a in inc["actions"] if not a["ok"]]
            raise RuntimeError(f"state correction failed on {host}: {failed[:3]}")

        def received() -> list[dict[str, Any]] | None:
            got = httpx.get(self.consumer + "/_consumer/received", timeout=10).json()["received"]
            return got if len(got) >= len(alarms) else None

        got = wait("every webhook", received, 30, 0.05)
        times = sorted(g["at"] for g in got)
        st = inc["stamps"]
        verdict = inc["verdicts"][0]["at"]
        done = max(st["T03"], st.get("T04", st["T03"]), st.get("T05", st["T03"]))
        self.lab.heal("host-crash", host)
        self.put_back(host, t0)
        return {
            "confirm": verdict - st["T01"],
            "first": times[0] - verdict,
            "last": times[-1] - verdict,
            "first_t01": times[0] - st["T01"],
            "last_t01": times[-1] - st["T01"],
            "events_out": st["T06"] - verdict,
            "evaluated": st["T07"] - verdict,
            # The first alarm's path: its outbox chunk written (T08, its first attempt
            # starts), then its POST until the consumer has it.
            "first_attempt": st["T08"] - verdict,
            "first_post": times[0] - st["T08"],
            "state": done - verdict,
        }

    def put_back(self, host: str, t0: float) -> None:
        def closed() -> bool:
            incs = self.get(f"/v1/incidents?host={host}")["incidents"]
            return all(i["state"] == "CLOSED" for i in incs if i["opened_at"] >= t0)

        wait(f"{host}'s incident closed", closed, 60, 0.1)
        self.run(self.restore(host))

    async def restore(self, host: str) -> None:
        await self.driver.set_forced_down(host, False)
        servers = await self.driver.list_host_servers(host)
        await bounded(
            self.driver.reset_state(s.id, "active") for s in servers if s.vm_state == "error"
        )

    async def floor_once(self, host: str) -> dict[str, float]:
        """The same calls as the inspector's, one after another, then undone."""
        servers = await self.driver.list_host_servers(host)
        ports = await self.driver.list_host_ports(host)
        t0 = time.perf_counter()
        await self.driver.set_forced_down(host, True)
        for s in servers:
            await self.driver.reset_state(s.id, "error")
        t_reset = time.perf_counter()
        for p in ports:
            await self.driver.set_data_plane_status(p.id, DataPlaneStatus.DOWN)
        t_end = time.perf_counter()
        await self.driver.set_forced_down(host, False)
        await bounded(
            [self.driver.reset_state(s.id, "active") for s in servers]
            + [self.driver.set_data_plane_status(p.id, DataPlaneStatus.ACTIVE) for p in ports]
        )
        return {"floor": t_end - t0, "floor_no_ports": t_reset - t0}


async def bounded(calls: Iterable[Awaitable[Any]], limit: int = 8) -> None:
    """Undo calls a few at a time: the driver gives up a call that waits for a worker
    longer than its deadline, and a hundred ports at once through the lab's Neutron
    (~200 ms each) would outlast it."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))


def start_serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "medevac", "serve"], env=env, stderr=subprocess.DEVNULL
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--layout", default="100,50,10,1,0", help="servers per host (last: spare)")
    p.add_argument("--write-docs", type=Path)
    p.add_argument("--section", default="notification", help="the docs section (and chart) name")
    p.add_argument(
        "--ab",
        metavar="VAR=VALUE",
        help="every other run by a controller started with this environment override "
        "(e.g. MEDEVAC_INSPECTOR__NOTIFY_HEAD_START=0.2); the controller is restarted "
        "before each run so that both arms start alike; the override's figures are "
        "printed, not written",
    )
    args = p.parse_args()
    override: dict[str, str] = {}
    if args.ab:
        var, eq, value = args.ab.partition("=")
        if not eq or not var:
            p.error("--ab takes VAR=VALUE")
        override[var] = value
    layout = [int(n) for n in args.layout.split(",")]
    with tempfile.TemporaryDirectory(prefix="medevac-bench-") as d:
        paths = LabPaths(Path(d))
        info = start_lab(paths, layout)
        port = free_port()
        consumer = subprocess.Popen(
            [sys.executable, "-m", "medevac.lab.consumer", "--port", str(port)]
        )
        # State correction and alerting only: recovery would fence the failed host,
        # and each run needs it back.
        env = {
            **os.environ,
            "MEDEVAC_CONFIG": info["controller_config"],
            "MEDEVAC_RECOVERY__ENABLED": "false",
        }
        serve = start_serve(env)
        bench = Bench(paths, info, f"http://127.0.0.1:{port}")
        rows: list[tuple[int, dict[str, list[float]]]] = []
        try:

            def ready() -> bool:
                try:
                    hosts = bench.get("/v1/hosts")["hosts"]
                    topo = bench.get("/v1/inspector")["topology"]
                except httpx.HTTPError:
                    return False
                return all(h["state"] == "UP" for h in hosts) and topo["servers"] == sum(layout)

            wait("the controller ready", ready, 60, 0.2)
            alarms = bench.register_alarms()
            for index, count in enumerate(layout):
                if not count:
                    continue
                host = f"host{index + 1}"
                figures: dict[str, list[float]] = {}
                other: dict[str, list[float]] = {}
                for run in range(args.runs):
                    into = other if override and run % 2 else figures
                    if override:
                        serve.terminate()
                        serve.wait(30)
                        serve = start_serve({**env, **override} if run % 2 else env)
                        wait("the controller ready", ready, 60, 0.2)
                    for key, value in bench.one_failure(host, alarms[host]).items():
                        into.setdefault(key, []).append(value)
                    for key, value in bench.run(bench.floor_once(host)).items():
                        into.setdefault(key, []).append(value)
                    time.sleep(1.0)  # the host's detector relearns its heartbeats
                rows.append((count, figures))
                for arm, got in (("", figures), (args.ab or "", other)):
                    if not got:
                        continue
                    far = tail_name(*got.values())
                    spread = {k: ms(v) for k, v in got.items()}
                    print(count, arm, f"(median / {far})", spread, flush=True)
                    for key in ("first", "last"):  # the runs behind each tail
                        runs = " ".join(f"{v * 1000:.0f}" for v in got[key])
                        print(f"  {key} alarm per run (ms): {runs}", flush=True)
        finally:
            serve.terminate()
            serve.wait(30)
            consumer.terminate()
            consumer.wait(10)
            bench.lab.close()
            bench.run(bench.driver.close())
            lab_down(paths)
    written = len(range(0, args.runs, 2)) if override else args.runs  # the base arm's
    report(rows, written, args.write_docs, args.section)


def report(
    rows: list[tuple[int, dict[str, list[float]]]], runs: int, docs: Path | None, section: str
) -> None:
    import statistics

    notify = [
        "| servers on the failed host | first alarm | last alarm | last alarm from T01 "
        "| Doctor (2017, shortcut) | runs |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    state = [
        "| servers | state corrected (ours) | floor: same calls back to back | ratio "
        "| floor without ports | Doctor's inspector on this lab | runs |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count, f in sorted(rows):
        notify.append(
            f"| {count} | {ms(f['first'])} | {ms(f['last'])} | {ms(f['last_t01'])} | "
            f"{DOCTOR.get(count, '-')} | {runs} |"
        )
        ratio = statistics.median(f["state"]) / statistics.median(f["floor"])
        state.append(
            f"| {count} | {ms(f['state'])} | {ms(f['floor'])} | {ratio:.2f} | "
            f"{ms(f['floor_no_ports'])} | {DOCTOR_ON_LAB.get(count, '-')} | {runs} |"
        )
    notify_far = tail_name(*(f[k] for _, f in rows for k in ("first", "last", "last_t01")))
    state_far = tail_name(*(f[k] for _, f in rows for k in ("state", "floor", "floor_no_ports")))
    confirm = [v for _, f in rows for v in f["confirm"]]
    biggest, fb = max(rows)
    path_keys = ("events_out", "evaluated", "first_attempt", "first_post")
    path = (
        f"The first alarm's path with {biggest} servers, from the verdict "
        f"(median / {tail_name(*(fb[k] for k in path_keys))}): "
        f"first events out {ms(fb['events_out'])}, the first alarms evaluated (T07) "
        f"{ms(fb['evaluated'])}, the first outbox chunk written and its POST started (T08) "
        f"{ms(fb['first_attempt'])}, then the POST until the consumer has it "
        f"{ms(fb['first_post'])}."
    )
    body = "\n".join(
        [
            f"Notification, verdict to webhook received (median / {notify_far}):",
            "",
            *notify,
            "",
            "The monitor's confirmation before the verdict (T01 to verdict, median / "
            f"{tail_name(confirm)}): {ms(confirm)}.",
            "",
            path,
            "",
            "State correction, verdict to force-down + servers in error + ports DOWN "
            f"(median / {state_far}):",
            "",
            *state,
        ]
    )
    print(body)
    if docs:
        counts = [c for c, _ in sorted(rows)]
        figures = [f for _, f in sorted(rows)]
        groups = [f"{c} server{'s' if c != 1 else ''}" for c in counts]
        med = statistics.median
        notify_chart = write_chart(
            docs,
            f"{section}-alarms",
            "verdict to webhook received (ms)",
            groups,
            {
                "first alarm": [med(f["first"]) * 1000 for f in figures],
                "last alarm": [med(f["last"]) * 1000 for f in figures],
            },
            "ms",
            whiskers=(
                tail_name(*(f[k] for f in figures for k in ("first", "last"))),
                {
                    "first alarm": [tail(f["first"])[1] * 1000 for f in figures],
                    "last alarm": [tail(f["last"])[1] * 1000 for f in figures],
                },
            ),
            marks={"Doctor (2017)": [_seconds(DOCTOR.get(c)) for c in counts]},
        )
        state_chart = write_chart(
            docs,
            f"{section}-state",
            "state corrected (s): medevac and the same calls back to back",
            groups,
            {
                "medevac": [med(f["state"]) for f in figures],
                "floor": [med(f["floor"]) for f in figures],
            },
            "s",
            whiskers=(
                tail_name(*(f[k] for f in figures for k in ("state", "floor"))),
                {
                    "medevac": [tail(f["state"])[1] for f in figures],
                    "floor": [tail(f["floor"])[1] for f in figures],
                },
            ),
        )
        write_section(docs, section, body + "\n\n" + notify_chart + "\n\n" + state_chart)


def _seconds(text: str | None) -> float | None:
    """Doctor's figure ("0.584 s") in ms."""
    return float(text.split()[0]) * 1000 if text else None


if __name__ == "__main__":
    main()

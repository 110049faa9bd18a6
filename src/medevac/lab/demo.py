"""The demo on the embedded lab: one host fault, from detection to recovered servers.

A lab of 4 hosts x 5 servers (one in three opts out of HA), a real `medevac serve`
and a consumer process with one alarm per server, registered by the server's owner.
The scenario strikes host1; the demo follows the controller live (verdict, incident,
alarms received, evacuations), then prints the fault's profile and the recovery, checks
the invariants (no server ever on two hosts, every alarm received exactly once, a
partitioned host fenced before anything runs elsewhere) and writes the charts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from medevac.lab.client import LabClient, TwoHostWatch, lab_down, lab_up
from medevac.lab.layout import LabError, LabPaths
from medevac.lab.stack import Stack, wait_until
from medevac.profiler.profile import from_api
from medevac.profiler.render import duration, print_profile, write_html, write_png

LAYOUT = [5, 5, 5, 5]
VICTIM = "host1"
# The scenario's name -> the lab fault it injects.
SCENARIOS = {
    "host-crash": "host-crash",
    "power-loss": "power-loss",
    "partition": "mgmt-partition",
}
RECOVERY_ENDS = {"COMPLETED", "PARTIAL", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}
RECOVERY_WITHIN = 120.0
MOVED = {"recovered", "already-moved"}


def run_demo(paths: LabPaths, scenario: str, console: Console, output: Path) -> None:
    if scenario not in SCENARIOS:
        raise LabError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    output.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]medevac demo: bringing the lab up")
    t0 = time.monotonic()
    info = lab_up(paths, len(LAYOUT), max(LAYOUT), layout=LAYOUT)
    console.print(
        f"lab of {len(LAYOUT)} hosts and {sum(LAYOUT)} servers ready in "
        f"{time.monotonic() - t0:.0f} s"
    )
    client = LabClient(paths)
    try:
        with Stack(info, log=output / "controller.log") as stack:
            stack.start(sum(LAYOUT))
            servers = client.status()["servers"]
            alarms = stack.register_alarms(servers)
            console.print(
                f"controller watching {len(LAYOUT)} hosts; the consumer registered "
                f"{len(alarms)} alarms (one per server, each by its owner)"
            )
            _show_victim(console, servers)
            with TwoHostWatch(client) as watch:
                _scenario(console, client, stack, scenario, servers, output)
            if watch.twice:
                raise LabError(f"servers ran on two hosts at once: {watch.twice}")
            console.print(
                f"[green]invariant holds: no server ran on two hosts "
                f"({watch.samples} samples of where every server runs)"
            )
    finally:
        client.close()
        console.rule("[bold]bringing the lab down")
        lab_down(paths)
        console.print("lab stopped")


def _show_victim(console: Console, servers: list[dict[str, Any]]) -> None:
    t = Table(title=f"servers on {VICTIM}", title_justify="left")
    for col in ("server", "project", "status", "HA_Enabled"):
        t.add_column(col)
    for s in sorted(servers, key=lambda s: s["name"]):
        if s["host"] == VICTIM:
            t.add_row(s["name"], s["project_id"], s["status"], s["metadata"].get("HA_Enabled"))
    console.print(t)


def _scenario(
    console: Console,
    client: LabClient,
    stack: Stack,
    scenario: str,
    servers: list[dict[str, Any]],
    output: Path,
) -> None:
    fault = SCENARIOS[scenario]
    on_victim = [s for s in servers if s["host"] == VICTIM]
    ha = {s["id"] for s in on_victim if s["metadata"].get("HA_Enabled") == "True"}
    console.rule(f"[bold]injecting {fault} on {VICTIM}")
    record = client.inject(fault, VICTIM)
    t00 = float(record["time"])
    console.print(f"fault injected at {record['at']} (T00)")
    progress = Progress(stack, t00, len(on_victim), len(ha))
    with Live(progress.view(), console=console, refresh_per_second=8) as live:
        while not progress.done():
            if time.time() - t00 > RECOVERY_WITHIN:
                raise LabError(f"the recovery of {VICTIM} did not end within {RECOVERY_WITHIN} s")
            time.sleep(0.15)
            progress.poll()
            live.update(progress.view())
    incident, recovery = progress.incident, progress.recovery
    assert incident is not None and recovery is not None
    # The last alarms may still be in flight when the recovery ends.
    wait_until("every alarm to reach the consumer", progress.all_received, 10)

    console.rule("[bold]profile")
    body = stack.get(f"/v1/incidents/{incident['id']}/profile?fault_at={t00}")
    profile = from_api(body)
    print_profile(profile, console, incident=f"{incident['id']} ({VICTIM})")
    (output / "profile.json").write_text(json.dumps(body, indent=2))
    write_png(profile, output / "profile.png")
    write_html(profile, output / "profile.html", title=f"medevac demo: {fault} on {VICTIM}")

    console.rule("[bold]recovery")
    _print_recovery(console, recovery)
    received = stack.received()
    got = [r for r in received["received"] if r["traits"].get("host") == VICTIM]
    console.print(
        f"alarms: {len(got)} received for the {len(on_victim)} servers of {VICTIM}, "
        f"{received['duplicates']} duplicates; first after "
        f"{duration(min(r['at'] for r in got) - t00)}, last after "
        f"{duration(max(r['at'] for r in got) - t00)}"
    )
    moved = {e["server_id"] for e in recovery["evacuations"] if e["result"] in MOVED}
    if recovery["state"] != "COMPLETED" or moved != ha:
        raise LabError(
            f"recovery {recovery['state']}: {len(moved)} of {len(ha)} HA servers evacuated"
        )
    if len(got) != len(on_victim) or received["duplicates"]:
        raise LabError(f"{len(got)} alarms for {len(on_victim)} servers")
    if fault == "mgmt-partition":
        fenced, first = profile.offset("R1"), profile.offset("R2")
        if fenced is None or first is None or fenced > first:
            raise LabError("the partitioned host was not fenced before its first evacuation")
        console.print(
            f"[green]{VICTIM} was alive behind the partition: fenced through IPMI after "
            f"{duration(fenced)}, first evacuation after {duration(first)}"
        )
    console.print(f"charts and the profile written to {output}/")


class Progress:
    """What the controller says of the fault, polled through its API."""

    def __init__(self, stack: Stack, t00: float, servers: int, ha: int) -> None:
        self.stack, self.t00, self.servers, self.ha = stack, t00, servers, ha
        self.incident: dict[str, Any] | None = None
        self.recovery: dict[str, Any] | None = None
        self.alarms = 0

    def poll(self) -> None:
        found = self.stack.get(f"/v1/incidents?host={VICTIM}&limit=1")["incidents"]
        self.incident = next((i for i in found if i["opened_at"] >= self.t00 - 1), None)
        rid = self.incident.get("recovery_id") if self.incident else None
        if rid:
            # None until the workflow's first step has written it.
            self.recovery = self.stack.find(f"/v1/recoveries/{rid}")
        self.all_received()

    def all_received(self) -> bool:
        got = self.stack.received()["received"]
        self.alarms = sum(1 for r in got if r["traits"].get("host") == VICTIM)
        return self.alarms >= self.servers

    def done(self) -> bool:
        return self.recovery is not None and self.recovery["state"] in RECOVERY_ENDS

    def view(self) -> Group:
        t = Table(title=f"{VICTIM}: live", title_justify="left")
        t.add_column("stage")
        t.add_column("state")
        inc, rec = self.incident, self.recovery
        since = time.time() - self.t00
        t.add_row("time since the fault", f"{since:.1f} s")
        if inc is None:
            t.add_row("detection", "watching heartbeats...")
        else:
            first = inc["verdicts"][0]
            t.add_row("detection", f"{first['kind']} after {duration(first['at'] - self.t00)}")
            ok = sum(1 for a in inc["actions"] if a.get("ok"))
            t.add_row("cloud state", f"incident {inc['state']}, {ok} actions done")
        t.add_row("alarms received", f"{self.alarms} of {self.servers}")
        if rec is not None:
            evacs = rec["evacuations"]
            done = sum(1 for e in evacs if e["result"] in MOVED)
            t.add_row("recovery", f"{rec['state']} (level {rec['level']})")
            t.add_row("evacuations", f"{done} of {self.ha} HA servers ACTIVE elsewhere")
        return Group(t)


def _print_recovery(console: Console, recovery: dict[str, Any]) -> None:
    t = Table(
        title=f"recovery {recovery['id']}: {recovery['state']}, level {recovery['level']}",
        title_justify="left",
    )
    for col in ("server", "from", "to", "result", "attempts", "took"):
        t.add_column(col)
    for e in recovery["evacuations"]:
        took = e["ended_at"] - e["started_at"] if e["ended_at"] else None
        t.add_row(
            e["server_name"],
            e["from_host"],
            e["to_host"] or "-",
            e["result"],
            str(e["attempts"]),
            duration(took) if took is not None else "-",
        )
    console.print(t)

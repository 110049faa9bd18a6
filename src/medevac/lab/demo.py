"""The demo on the embedded lab: one host fault, from detection to recovered servers.

A lab of 4 hosts x 5 servers (one in three opts out of HA), a real `medevac serve`
and a consumer process with one alarm per server, registered by the server's owner.
The scenario strikes host1; the demo follows the controller live (verdict, incident,
alarms received, evacuations), then prints the fault's profile and the recovery, checks
the invariants (no server ever on two hosts, every alarm received exactly once, a
partitioned host fenced before anything runs elsewhere) and writes the charts.

``controller-kill`` runs three controllers instead (PostgreSQL and Redis): host1
crashes, its owner is killed right after it fenced host1, and another controller
finishes the recovery; the demo shows who owned host1 when and the takeover's timeline.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
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
    "controller-kill": "host-crash",  # and the owner of the host killed once it fenced it
}
# Scenarios of several controllers: how many.
CONTROLLERS = {"controller-kill": 3}
BEFORE_FENCED = {"STARTED", "FENCING"}
RECOVERY_ENDS = {"COMPLETED", "PARTIAL", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}
RECOVERY_WITHIN = 120.0
MOVED = {"recovered", "already-moved"}


def run_demo(paths: LabPaths, scenario: str, console: Console, output: Path) -> None:
    if scenario not in SCENARIOS:
        raise LabError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    output.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]medevac demo: bringing the lab up")
    t0 = time.monotonic()
    controllers = CONTROLLERS.get(scenario, 1)
    info = lab_up(paths, len(LAYOUT), max(LAYOUT), layout=LAYOUT, controllers=controllers)
    console.print(
        f"lab of {len(LAYOUT)} hosts and {sum(LAYOUT)} servers ready in "
        f"{time.monotonic() - t0:.0f} s"
        + (f", {controllers} controllers on {info['storage_url']}" if controllers > 1 else "")
    )
    client = LabClient(paths)
    try:
        with Stack(info, log=output / "controller.log") as stack:
            stack.start(sum(LAYOUT))
            servers = client.status()["servers"]
            through = None
            if controllers > 1:
                through = _show_owners(console, stack)
            alarms = stack.register_alarms(servers, through)
            console.print(
                f"{'controllers' if controllers > 1 else 'controller'} watching "
                f"{len(LAYOUT)} hosts; the consumer registered "
                f"{len(alarms)} alarms (one per server, each by its owner)"
                + (f" through {VICTIM}'s owner" if through else "")
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


def _show_owners(console: Console, stack: Stack) -> str:
    """Each controller's hosts; returns the API of the victim's owner."""
    t = Table(title="controllers", title_justify="left")
    for col in ("member", "API", "hosts (epoch)"):
        t.add_column(col)
    victims = ""
    for member, url in stack.urls().items():
        view = stack.get_from(url, "/v1/cluster")
        t.add_row(str(member), url, ", ".join(f"{h} ({e})" for h, e in view["hosts"].items()))
        if VICTIM in view["hosts"]:
            victims = url
    console.print(t)
    return victims


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
    kill = scenario == "controller-kill"
    owner_before = stack.owner_of(VICTIM) if kill else None
    console.rule(f"[bold]injecting {fault} on {VICTIM}")
    record = client.inject(fault, VICTIM)
    t00 = float(record["time"])
    console.print(f"fault injected at {record['at']} (T00)")
    progress = Progress(stack, t00, len(on_victim), len(ha))
    killed: dict[str, Any] | None = None
    with Live(progress.view(), console=console, refresh_per_second=8) as live:
        while not progress.done():
            if time.time() - t00 > RECOVERY_WITHIN:
                raise LabError(f"the recovery of {VICTIM} did not end within {RECOVERY_WITHIN} s")
            time.sleep(0.02 if kill and killed is None else 0.15)
            progress.poll()
            rec = progress.recovery
            if kill and killed is None and rec is not None and rec["state"] not in BEFORE_FENCED:
                if progress.done():
                    raise LabError(f"the recovery ended before its owner could be killed: {rec}")
                killed = client.inject("controller-kill", VICTIM)
                live.console.print(
                    f"[red]{killed['member_id']} (pid {killed['pid']}), the owner of {VICTIM}, "
                    f"killed (SIGKILL) with the recovery {rec['state']} "
                    f"{duration(float(killed['time']) - t00)} after T00"
                )
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
    if killed is not None:
        assert owner_before is not None
        _print_takeover(console, stack, t00, owner_before, killed, incident, recovery, ha)
    console.print(f"charts and the profile written to {output}/")


def _print_takeover(
    console: Console,
    stack: Stack,
    t00: float,
    owner_before: tuple[str, int],
    killed: dict[str, Any],
    incident: dict[str, Any],
    recovery: dict[str, Any],
    ha: set[str],
) -> None:
    """Who owned the victim when, the takeover's timeline, and each HA server recovered
    exactly once."""
    console.rule(f"[bold]takeover of {VICTIM}")
    killed_at = float(killed["time"])
    audit = list(reversed(stack.get(f"/v1/audit?subject={VICTIM}&limit=1000")["events"]))
    owners = [e for e in audit if e["kind"] == "host.owner"]
    t = Table(
        title=f"who owned {VICTIM} when (the audit's host.owner entries)", title_justify="left"
    )
    for col in ("at", "from", "to", "epoch"):
        t.add_column(col)
    for e in owners:
        d = e["detail"]
        t.add_row(e["at"], str(d["from"] or "-"), d["to"], str(d["epoch"]))
    console.print(t)
    victim, epoch = owner_before
    after = [e for e in owners if _at(e) >= killed_at - 0.001]
    if killed["member_id"] != victim or not after or after[-1]["detail"]["to"] == victim:
        raise LabError(f"{VICTIM} was not taken over from {victim}: {owners}")
    heir, new_epoch = after[-1]["detail"]["to"], after[-1]["detail"]["epoch"]
    acts = [
        e
        for e in audit
        if e["kind"].startswith("host.recovery.")
        and e["actor"] == heir
        and e["detail"].get("epoch") == new_epoch
    ]
    if not acts:
        raise LabError(f"{heir} never acted on the recovery of {VICTIM}")
    fenced = recovery["detail"].get("fencing", {}).get("ended_at")
    steps = [
        ("fault injected (T00)", t00, ""),
        ("lost host detected", incident["verdicts"][0]["at"], victim),
        ("fenced", fenced, victim),
        ("owner killed (SIGKILL)", killed_at, victim),
        ("host re-owned", _at(after[-1]), f"{heir}, epoch {epoch} -> {new_epoch}"),
        ("recovery resumed", _at(acts[0]), f"{heir}: {acts[0]['kind'].removeprefix('host.')}"),
        (f"recovery {recovery['state']}", recovery["ended_at"], heir),
    ]
    t = Table(title="the takeover's timeline", title_justify="left")
    for col in ("step", "after T00", "after the kill", "by"):
        t.add_column(col)
    for name, at, by in steps:
        if at is None:
            t.add_row(name, "-", "-", by)
            continue
        since_kill = duration(at - killed_at) if at >= killed_at else "-"
        t.add_row(name, duration(at - t00), since_kill, by)
    console.print(t)
    rows = stack.get(f"/v1/history?host={VICTIM}&limit=1000")["evacuations"]
    per_server: dict[str, int] = {}
    for r in rows:
        per_server[r["server_id"]] = per_server.get(r["server_id"], 0) + 1
    if set(per_server) != ha or any(n != 1 for n in per_server.values()):
        raise LabError(f"HA servers not evacuated exactly once each: {per_server}")
    refused = stack.get(f"/v1/audit?subject={VICTIM}&limit=1000")["events"]
    stale = sum(1 for e in refused if e["kind"] == "host.stale_owner")
    console.print(
        f"[green]{heir} finished {victim}'s recovery: each of the {len(ha)} HA servers "
        f"evacuated exactly once ({stale} steps of a stale owner refused)"
    )


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


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

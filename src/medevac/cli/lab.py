"""``medevac lab ...`` and ``medevac demo``: the embedded cloud for demos and tests."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medevac.cli.output import fail
from medevac.cloud.models import POWER_STATES
from medevac.lab.client import LabClient, lab_controllers, lab_down, lab_env, lab_up
from medevac.lab.faults import FaultKind
from medevac.lab.layout import LabError, LabPaths, default_lab_dir

# Registered, with their help lines, by medevac.cli.main when a lab command runs.
lab_app = typer.Typer()
# Wide enough for the status tables when the output is a file or a pipe.
out = Console() if sys.stdout.isatty() else Console(width=160)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the lab keeps its files "
        "(default: $MEDEVAC_LAB_DIR or ~/.local/state/medevac/lab).",
    ),
]


def _paths(state_dir: Path | None) -> LabPaths:
    return LabPaths(state_dir or default_lab_dir())


@lab_app.command("up")
def up(
    hosts: Annotated[int, typer.Option(help="Compute hosts.")] = 3,
    servers_per_host: Annotated[int, typer.Option(help="Servers booted on each host.")] = 2,
    report_interval: Annotated[float, typer.Option(help="Nova report_interval (s).")] = 1.0,
    service_down_time: Annotated[int, typer.Option(help="Nova service_down_time (s).")] = 5,
    transport_url: Annotated[
        str,
        typer.Option(
            help="RabbitMQ URL for Nova's versioned notifications; 'auto' uses a local "
            "RabbitMQ when one answers, 'none' publishes nowhere."
        ),
    ] = "auto",
    layout: Annotated[
        str | None,
        typer.Option(help="Servers on each host, e.g. 100,50,10,1,0 (overrides the two above)."),
    ] = None,
    redfish: Annotated[
        str, typer.Option(help="Hosts whose BMC speaks Redfish, e.g. host2,host3 (else IPMI).")
    ] = "",
    keep_store: Annotated[
        bool,
        typer.Option(
            "--keep-store",
            help="Keep the previous lab's controller store (incidents, alarms, audit, "
            "workflows) instead of starting the controller on an empty one.",
        ),
    ] = False,
    controllers: Annotated[
        int,
        typer.Option(
            help="Controllers to configure: more than 1 puts them on a PostgreSQL database "
            "made for the lab and a Redis group (both on 127.0.0.1), each with its own "
            "medevac-N.toml; the agents heartbeat to all of them."
        ),
    ] = 1,
    identity: Annotated[
        str,
        typer.Option(
            help="keystone: a real Keystone with an admin, a reader, a member of each "
            "tenant and medevac's service user, whose tokens the controller, Nova and "
            "Neutron accept; static: no Keystone, a token's form says who it is."
        ),
    ] = "keystone",
    state_dir: StateDir = None,
) -> None:
    """Start a lab in the background; returns when it is ready."""
    t0 = time.monotonic()
    try:
        counts = [int(n) for n in layout.split(",")] if layout else None
    except ValueError:
        raise fail(f"--layout: not a list of integers: {layout!r}") from None
    try:
        info = lab_up(
            _paths(state_dir),
            hosts,
            servers_per_host,
            report_interval=report_interval,
            service_down_time=service_down_time,
            transport_url=transport_url,
            layout=counts,
            redfish=[h for h in redfish.split(",") if h],
            keep_store=keep_store,
            controllers=controllers,
            identity=identity,
        )
    except LabError as exc:
        raise fail(exc) from None
    out.print(
        f"lab ready in {time.monotonic() - t0:.1f} s: {len(info['hosts'])} hosts, "
        f"{info['servers']} servers (state dir {_paths(state_dir).root})"
    )
    if info["store"] == "kept":
        out.print(
            "[yellow]kept the previous controller store (--keep-store): its open incidents "
            "are checked against this lab's Nova when `medevac serve` starts[/]"
        )
    elif info["store"] == "removed":
        out.print("the controller starts on an empty store (--keep-store keeps the previous one)")
    if info.get("storage_url"):
        out.print(
            f"{len(info['controllers'])} controllers configured on {info['storage_url']} "
            f"and Redis group {info['group']}; `medevac lab env` says how to start each"
        )
    if info.get("keystone"):
        out.print(keystone_summary(info["keystone"]))
    out.print("use it: eval $(medevac lab env)")


def keystone_summary(keystone: dict[str, Any]) -> str:
    """The lab Keystone's URL and its users' credentials (lab-only secrets)."""
    lines = [f"keystone at {keystone['auth_url']}; users (clouds.yaml: medevac-lab-user-NAME):"]
    for u in keystone["users"]:
        lines.append(
            f"  {u['name']} / {u['password']}   role {u['role']} in project {u['project']}"
        )
    return "\n".join(lines)


@lab_app.command("down")
def down(state_dir: StateDir = None) -> None:
    """Stop the lab and every process it started."""
    if lab_down(_paths(state_dir)):
        out.print("lab stopped")
    else:
        out.print("no lab was running")


@lab_app.command("env")
def env(state_dir: StateDir = None) -> None:
    """Print shell exports that point openstack, openstacksdk and medevac at the lab."""
    try:
        values = lab_env(_paths(state_dir))
    except LabError as exc:
        raise fail(exc) from None
    for key, value in values.items():
        typer.echo(f"export {key}={shlex.quote(value)}")
    info = _paths(state_dir).read_info() or {}
    if info.get("keystone"):
        # On stderr, like the note below: `eval` runs only the exports.
        for line in keystone_summary(info["keystone"]).splitlines():
            typer.echo(f"# {line}", err=True)
    controllers = lab_controllers(_paths(state_dir))
    if len(controllers) > 1:
        # On stderr: `eval "$(medevac lab env)"` runs the exports and shows this.
        typer.echo(
            f"# {len(controllers)} controllers; start each (MEDEVAC_CONFIG above is the first's):",
            err=True,
        )
        for c in controllers:
            typer.echo(
                f"MEDEVAC_CONFIG={shlex.quote(c['config'])} medevac serve &"
                f"   # {c['member_id']}, API {c['url']}",
                err=True,
            )


def _client(state_dir: Path | None) -> LabClient:
    try:
        return LabClient(_paths(state_dir))
    except LabError as exc:
        raise fail(exc) from None


def render_status(status: dict[str, Any], console: Console = out) -> None:
    hosts = Table(title="hosts", title_justify="left")
    for col in (
        "host",
        "nova state",
        "status",
        "forced down",
        "nova-compute",
        "BMC",
        "power",
        "faults",
    ):
        hosts.add_column(col)
    for h in status["hosts"]:
        nova, bmc = h["nova"], h["bmc"]
        state = nova["state"] or "?"
        hosts.add_row(
            h["name"],
            f"[{'green' if state == 'up' else 'red'}]{state}[/]",
            str(nova["status"]),
            "yes" if nova["forced_down"] else "no",
            h["compute_process"],
            f"{bmc.get('protocol', 'ipmi')} {bmc['address']}:{bmc['port']}"
            + ("" if bmc["reachable"] else " (unreachable)"),
            bmc["power"],
            ", ".join(h["faults"]) or "-",
        )
    console.print(hosts)
    ports = {p["device_id"]: p for p in status["ports"]}
    servers = Table(title="servers", title_justify="left")
    for col in ("server", "project", "host", "status", "power", "host_status", "HA", "port"):
        servers.add_column(col)
    for s in sorted(status["servers"], key=lambda s: s["name"]):
        port = ports.get(s["id"])
        dps = (port["data_plane_status"] or "unset") if port else "-"
        servers.add_row(
            s["name"],
            s["project_id"],
            str(s["host"]),
            s["status"],
            POWER_STATES.get(s["power_state"], str(s["power_state"])),
            str(s["host_status"]),
            s["metadata"].get("HA_Enabled", "-"),
            f"{port['physnet']} {dps}" if port else "-",
        )
    console.print(servers)


@lab_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Hosts (Nova's view, BMC, faults), servers and ports of the running lab."""
    client = _client(state_dir)
    try:
        data = client.status()
    except LabError as exc:
        raise fail(exc) from None
    info = _paths(state_dir).read_info() or {}
    if as_json:
        typer.echo(json.dumps({**data, "keystone": info.get("keystone")}, indent=2))
    else:
        render_status(data)
        if info.get("keystone"):
            out.print(keystone_summary(info["keystone"]), highlight=False)


@lab_app.command("running")
def running(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_dir: StateDir = None,
) -> None:
    """For every server, the hosts on which its domain runs right now."""
    try:
        data = _client(state_dir).running()
    except LabError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for server, hosts in sorted(data.items()):
        mark = "[red]TWICE[/]" if len(hosts) > 1 else ""
        out.print(f"{server}  {', '.join(hosts) or '(not running)'} {mark}")


def _fault_command(inject: bool) -> Any:
    verb = "inject" if inject else "heal"

    def command(
        kind: Annotated[FaultKind, typer.Argument(help="Fault kind.")],
        target: Annotated[
            str,
            typer.Argument(
                help="Host name, or server id for server-crash; for controller-kill, "
                "controller-pause and controller-partition (cut off from Redis, its peers and "
                "the agents by cgroup and iptables rules; needs root), a member id (ctl-2) "
                "or a host (its owner is struck)."
            ),
        ],
        physnet: Annotated[
            str | None, typer.Argument(help="Physical network, for link-down.")
        ] = None,
        state_dir: StateDir = None,
    ) -> None:
        client = _client(state_dir)
        try:
            method = client.inject if inject else client.heal
            record = method(kind.value, target, physnet)
        except LabError as exc:
            raise fail(exc) from None
        extra = f" {physnet}" if physnet else ""
        if "member_id" in record:  # a controller fault: whom it struck
            extra += f" ({record['member_id']}, pid {record['pid']})"
        out.print(f"{verb}ed {kind.value} {target}{extra} at {record['at']}")

    command.__doc__ = f"{verb.capitalize()} a fault (records its wall-clock time)."
    return command


lab_app.command("inject")(_fault_command(True))
lab_app.command("heal")(_fault_command(False))


def demo(
    scenario: Annotated[
        str,
        typer.Option(
            help="Fault to show: host-crash, power-loss, partition, or controller-kill "
            "(three controllers; host1's owner killed mid-recovery)."
        ),
    ] = "host-crash",
    output: Annotated[
        Path, typer.Option(help="Where the profile and its charts are written.")
    ] = Path("demo-output"),
    state_dir: StateDir = None,
) -> None:
    from medevac.lab.demo import run_demo

    try:
        run_demo(_paths(state_dir), scenario, out, output)
    except LabError as exc:
        raise fail(exc) from None

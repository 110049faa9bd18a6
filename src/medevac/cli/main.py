"""``medevac`` command line: the controller, its database, and the lab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group

from medevac import __version__
from medevac.cli.output import fail
from medevac.config import ConfigError, Settings, load_settings
from medevac.storage import Database, StorageError

if TYPE_CHECKING:
    # The copy of Click that Typer's command groups are built on.
    from typer._click import Command, Context

# The lab is a development surface: its commands are imported only when one of them runs,
# so the controller and the agent never load it. The list of commands shows these lines.
LAB_COMMANDS = {
    "lab": "The lab: real Nova + Neutron with fake hypervisors and BMCs.",
    "demo": "The main job: a lab, medevac on it, one host fault from detection to recovery.",
}


class MedevacGroup(TyperGroup):
    """The top-level command group; the lab's commands load on first use."""

    def list_commands(self, ctx: Context) -> list[str]:
        loaded = super().list_commands(ctx)
        return loaded + [name for name in LAB_COMMANDS if name not in loaded]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name in LAB_COMMANDS:
            # Enough to list it; resolve_command loads the real command to run it.
            return TyperCommand(cmd_name, help=LAB_COMMANDS[cmd_name])
        return found

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        # A name not loaded yet is a lab command, or a typo: for the typo, the lab's
        # commands are among those a suggestion may name.
        if args and args[0] not in self.commands:
            self.commands.update(_lab_commands())
        return super().resolve_command(ctx, args)


def _lab_commands() -> dict[str, Command]:
    from medevac.cli.lab import demo, lab_app

    lab = typer.Typer()
    lab.add_typer(lab_app, name="lab", help=LAB_COMMANDS["lab"])
    lab.command(help=LAB_COMMANDS["demo"])(demo)
    return dict(get_group(lab).commands)


app = typer.Typer(
    name="medevac",
    cls=MedevacGroup,
    help="Fault management and VM high availability for OpenStack clouds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The controller's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
host_app = typer.Typer(help="Act on one compute host.", no_args_is_help=True)
app.add_typer(host_app, name="host")
config_app = typer.Typer(help="The controller's configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (default: $MEDEVAC_CONFIG).",
        envvar="MEDEVAC_CONFIG",
    ),
]


def settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print medevac's version."""
    typer.echo(__version__)


@app.command()
def serve(
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the controller: API, monitor receivers, inspector, notifier, recovery."""
    from medevac.service import Controller

    setup_logging(verbose)
    settings = settings_or_exit(config)
    try:
        from medevac.api import create_app

        controller = Controller(settings, create_app)
        asyncio.run(controller.run())
    except (StorageError, ConfigError) as exc:
        raise fail(str(exc)) from None
    if controller.restart_asked:
        # Replaced while it was not heard from: a fresh process, with nothing of the
        # old one's memory, rejoins under new epochs.
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, "-m", "medevac", *sys.argv[1:]])  # noqa: S606 (the same command, afresh)


@app.command()
def agent(
    host: Annotated[str, typer.Option(help="This compute host's name, as Nova knows it.")],
    controller: Annotated[
        list[str], typer.Option(help="Controller heartbeat address HOST:PORT (repeatable).")
    ],
    key_file: Annotated[
        Path,
        typer.Option(
            help="File holding this host's heartbeat key (written by 'medevac agent-key "
            "HOST' where the controller's master key is)."
        ),
    ],
    interval: Annotated[float, typer.Option(help="Heartbeat interval (s).")] = 0.1,
    physnet: Annotated[
        list[str] | None,
        typer.Option(help="Data-plane link to watch, PHYSNET=INTERFACE (repeatable)."),
    ] = None,
    restart_compute_command: Annotated[
        str | None,
        typer.Option(
            help="Command that restarts nova-compute, run (without a shell) when the "
            "controller asks, e.g. 'systemctl restart nova-compute'; unset: never."
        ),
    ] = None,
) -> None:
    """Run on a compute host: send signed heartbeats with the host's local checks."""
    from medevac.agent.agent import Agent, AgentConfig
    from medevac.agent.probes import HostProbes

    try:
        key = key_file.read_bytes().strip()
    except OSError as exc:
        raise fail(f"{key_file}: {exc.strerror}") from None
    if len(key) < 16:
        raise fail(f"{key_file}: the key must be at least 16 bytes")
    try:
        controllers = tuple(_host_port(c) for c in controller)
        links = dict(_pair(p) for p in physnet or [])
    except ValueError as exc:
        raise fail(str(exc)) from None
    restart = None
    if restart_compute_command:
        argv = shlex.split(restart_compute_command)

        async def restart() -> None:
            proc = await asyncio.create_subprocess_exec(*argv)
            if await proc.wait() != 0:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")

    config = AgentConfig(
        host=host,
        controllers=controllers,
        key=key,
        interval=interval,
        restart_compute=restart if restart_compute_command else None,
    )
    setup_logging(False)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Agent(config, HostProbes(interfaces=links)).run())


@app.command("agent-key")
def agent_key(
    host: Annotated[str, typer.Argument(help="The compute host's name, as Nova knows it.")],
    output: Annotated[
        Path | None,
        typer.Option(help="Write the key to this file (mode 0600) instead of printing it."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """One host's heartbeat key, derived from the controller's master key (agent_key_file)."""
    from medevac.monitor.protocol import host_key

    settings = settings_or_exit(config)
    if settings.hosts and host not in settings.hosts:
        # A mistyped name would give a key no heartbeat of the real host verifies with.
        raise fail(f"host {host!r} is not in the configuration's [hosts]")
    try:
        key = host_key(settings.agent_key(), host)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if output is None:
        typer.echo(key.decode())
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
    except OSError as exc:
        raise fail(f"{output}: {exc.strerror}") from None
    typer.echo(f"{output}: the heartbeat key of {host}")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--controller {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _pair(value: str) -> tuple[str, str]:
    name, sep, interface = value.partition("=")
    if not sep or not name or not interface:
        raise ValueError(f"--physnet {value!r}: expected PHYSNET=INTERFACE")
    return name, interface


UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="MEDEVAC_URL",
        help="Controller API; several controllers comma-separated, tried in turn.",
    ),
]
TokenOption = Annotated[str, typer.Option(envvar="MEDEVAC_TOKEN", help="API token.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DEFAULT_URL = "http://127.0.0.1:8780"


def api_call(
    method: str,
    url: str,
    token: str,
    path: str,
    timeout: float = 10,
    body: dict[str, Any] | None = None,
) -> Any:
    """Call a controller (``body``: sent as JSON); with several URLs (``a,b,c``), the
    next is tried when one does not answer, or answers that another controller owns
    the host. Returns the response; exits with the API's own message (or why none
    answered) otherwise."""
    import httpx

    from medevac.cluster.ownership import NOT_OWNER

    urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
    failures: list[str] = []
    resp = None
    for base in urls:
        try:
            resp = httpx.request(
                method,
                f"{base}{path}",
                headers={"X-Auth-Token": token},
                timeout=timeout,
                json=body,
            )
        except httpx.HTTPError as exc:
            failures.append(f"{base}: {exc}")
            continue
        if resp.status_code == 409 and NOT_OWNER in _message(resp) and base != urls[-1]:
            failures.append(f"{base}: {_message(resp)}")
            continue
        break
    if resp is None:
        raise fail("cannot reach the controller: " + "; ".join(failures))
    if resp.status_code not in (200, 202):
        raise fail(f"{resp.status_code}: {_message(resp)}")
    return resp.json()


def api_get(url: str, token: str, path: str) -> Any:
    """GET a controller endpoint; exit with the API's own message on failure."""
    return api_call("GET", url, token, path)


@app.command()
def hosts(
    as_json: JsonOption = False, url: UrlOption = DEFAULT_URL, token: TokenOption = ""
) -> None:
    """Every watched host: detector state, lifecycle, BMC power, Nova's view, verdict."""
    data = api_get(url, token, "/v1/hosts")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="hosts", title_justify="left")
    for col in ("host", "state", "lifecycle", "phi", "last heartbeat", "BMC", "Nova", "verdict"):
        table.add_column(col)
    for h in data["hosts"]:
        det, verdict, nova = h["detector"], h["verdict"], h["nova"] or {}
        age = det["last_heartbeat_age_s"]
        table.add_row(
            h["name"],
            h["state"],
            (h.get("lifecycle") or {}).get("state", "-"),
            f"{det['phi']:.1f}",
            "-" if age is None else f"{age * 1000:.0f} ms ago",
            h["bmc"]["power"] or ("error" if h["bmc"]["error"] else "-"),
            nova.get("state", "-"),
            verdict["kind"] if verdict else "-",
        )
    Console().print(table)
    counters = data["counters"] or {}
    dropped = {k: v for k, v in (counters.get("dropped") or {}).items() if v}
    Console().print(f"received {counters.get('received', 0)}, dropped {dropped or 'none'}")


@host_app.command("release")
def host_release(
    host: Annotated[str, typer.Argument(help="The host to put back in service.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Put a host that came back into service (unset force-down, enable, restore ports)."""
    body = api_call("POST", url, token, f"/v1/hosts/{host}/release", timeout=60)
    Console().print(f"{host} released: {body['ports_restored']} ports restored")


maintenance_app = typer.Typer(
    help="Planned maintenance of a host: owners told, HA servers live-migrated away.",
    no_args_is_help=True,
)
host_app.add_typer(maintenance_app, name="maintenance")


@maintenance_app.command("start")
def maintenance_start(
    host: Annotated[str, typer.Argument(help="The host to put under maintenance.")],
    reason: Annotated[
        str, typer.Option(help="Why (the compute service's disabled reason, in the events).")
    ] = "planned maintenance",
    deadline: Annotated[
        str | None,
        typer.Option(
            help="Until when owners may answer, ISO 8601 (no zone: UTC); default: no wait, "
            "the migrations start at once."
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Disable the host, tell its servers' owners, then live-migrate its HA servers away."""
    path = f"/v1/hosts/{host}/maintenance"
    body = api_call(
        "POST", url, token, path, timeout=60, body={"reason": reason, "deadline": deadline}
    )
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    until = body["deadline"] or "none: migrating at once"
    Console().print(
        f"{host} under maintenance {body['id']} ({body['state']}): {body['reason']}; "
        f"answers until {until}"
    )


@maintenance_app.command("end")
def maintenance_end(
    host: Annotated[str, typer.Argument(help="The host whose maintenance ends.")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """End the host's maintenance: its compute service enabled, maintenance.complete sent."""
    body = api_call("DELETE", url, token, f"/v1/hosts/{host}/maintenance", timeout=60)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    enabled = "service enabled" if body["service_enabled"] else "service left as it is"
    Console().print(f"{host}: maintenance {body.get('id', '-')} ended, {enabled}")


@maintenance_app.command("show")
def maintenance_show(
    host: Annotated[str, typer.Argument(help="The host.")],
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """The host's maintenance (open, else the last): state, answers, each server's move."""
    m = api_get(url, token, f"/v1/hosts/{host}/maintenance")
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    Console().print(
        f"[bold]maintenance {m['id']}[/] on {m['host']}: [bold]{m['state']}[/]  "
        f"reason {m['reason']!r}, deadline {m['deadline'] or '-'}, started by {m['started_by']}"
    )
    table = Table(title_justify="left")
    for col in ("server", "project", "HA", "answer", "result", "to", "attempts"):
        table.add_column(col)
    for s in m["servers"]:
        table.add_row(
            s["name"],
            s["project_id"],
            "yes" if s["ha"] else "no",
            s["answer"] or "-",
            s["result"],
            s["to_host"] or "-",
            str(s["attempts"]),
        )
    Console().print(table)


def _message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(resp.text)


@app.command()
def incidents(
    incident_id: Annotated[str | None, typer.Argument(help="Show one incident in full.")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's incidents.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Incidents: host, state, verdicts, the actions taken and their results, events."""
    if incident_id:
        one = api_get(url, token, f"/v1/incidents/{resolve_incident(url, token, incident_id)}")
        if as_json:
            typer.echo(json.dumps(one, indent=2))
        else:
            _print_incident(one)
        return
    data = api_get(url, token, "/v1/incidents" + (f"?host={host}" if host else ""))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="incidents", title_justify="left")
    for col in ("id", "host", "kind", "state", "opened", "verdicts", "actions ok/failed", "events"):
        table.add_column(col)
    for inc in data["incidents"]:
        ok = sum(1 for a in inc["actions"] if a.get("ok"))
        failed = sum(1 for a in inc["actions"] if a.get("ok") is False)
        table.add_row(
            inc["id"][:8],
            inc["host"],
            inc["kind"],
            inc["state"],
            _clock(inc["opened_at"]),
            ", ".join(dict.fromkeys(v["kind"] for v in inc["verdicts"])),
            f"{ok}/{failed}",
            str(sum(e["count"] for e in inc["events"])),
        )
    Console().print(table)


@app.command()
def profile(
    incident_id: Annotated[
        str | None, typer.Argument(help="Incident id or its first characters (default: newest).")
    ] = None,
    fault_at: Annotated[
        float | None,
        typer.Option(help="The fault's known time (epoch seconds) as T00, e.g. a lab injection."),
    ] = None,
    png: Annotated[Path | None, typer.Option(help="Write the timeline chart as PNG.")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the profile as one HTML page.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """A fault's profile: each checkpoint's time (T00 to T09, R1 to R3) as a timeline,
    and the components' time cost per goal, costliest first."""
    from medevac.profiler.profile import from_api
    from medevac.profiler.render import print_profile, write_html, write_png

    found = resolve_incident(url, token, incident_id)
    query = f"?fault_at={fault_at}" if fault_at is not None else ""
    body = api_get(url, token, f"/v1/incidents/{found}/profile{query}")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        print_profile(from_api(body), Console(), incident=f"{found} ({body['host']})")
    if png is not None:
        write_png(from_api(body), png)
    if html is not None:
        write_html(from_api(body), html, title=f"medevac: incident {found} on {body['host']}")


def resolve_incident(url: str, token: str, incident_id: str | None) -> str:
    """A full incident id from a prefix (as the tables show), or the newest incident's."""
    if incident_id is not None and len(incident_id) == 36:
        return incident_id
    found = api_get(url, token, "/v1/incidents?limit=1000")["incidents"]
    matches = [i["id"] for i in found if i["id"].startswith(incident_id or "")]
    if not matches:
        raise fail(f"no incident {'matches ' + incident_id if incident_id else 'yet'}")
    if incident_id and len(matches) > 1:
        raise fail(f"{incident_id} matches {len(matches)} incidents; give more characters")
    return str(matches[0])


@app.command()
def recoveries(
    recovery_id: Annotated[str | None, typer.Argument(help="Show one recovery in full.")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's recoveries.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow the recovery live until it ends.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """Host recoveries: fencing, evacuations and their progress."""
    if recovery_id:
        if watch and not as_json:
            _watch_recovery(url, token, recovery_id)
            return
        one = api_get(url, token, f"/v1/recoveries/{recovery_id}")
        if as_json:
            typer.echo(json.dumps(one, indent=2))
        else:
            Console().print(_recovery_view(one))
        return
    data = api_get(url, token, "/v1/recoveries" + (f"?host={host}" if host else ""))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="recoveries", title_justify="left")
    for col in ("id", "host", "level", "state", "started", "ended"):
        table.add_column(col)
    for r in data["recoveries"]:
        table.add_row(
            r["id"],
            r["host"],
            str(r["level"]),
            r["state"],
            _clock(r["started_at"]),
            _clock(r["ended_at"]) if r["ended_at"] else "-",
        )
    Console().print(table)


def _recovery_view(r: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar

    evacs = r.get("evacuations", [])
    planned = len(r["detail"].get("planned", [])) or len(evacs)
    done = sum(1 for e in evacs if e["result"] in ("recovered", "already-moved"))
    failed = sum(1 for e in evacs if e["result"] == "failed")
    head = (
        f"[bold]{r['id']}[/] host {r['host']} level {r['level']}: [bold]{r['state']}[/]  "
        f"{done}/{planned} servers recovered" + (f", [red]{failed} failed[/]" if failed else "")
    )
    table = Table(title_justify="left")
    for col in ("server", "from", "to", "result", "attempts", "s"):
        table.add_column(col)
    for e in evacs:
        took = f"{e['ended_at'] - e['started_at']:.1f}" if e["ended_at"] else "-"
        table.add_row(
            e["server_name"], e["from_host"], e["to_host"] or "-", e["result"],
            str(e["attempts"]), took,
        )  # fmt: skip
    bar = ProgressBar(total=max(planned, 1), completed=done + failed, width=50)
    return Group(head, bar, table)


def _watch_recovery(url: str, token: str, recovery_id: str) -> None:
    import time

    from rich.live import Live

    ended = {"COMPLETED", "PARTIAL", "FENCING_FAILED", "NOVA_NEVER_SAW_DOWN"}
    with Live(refresh_per_second=4) as live:
        while True:
            r = api_get(url, token, f"/v1/recoveries/{recovery_id}")
            live.update(_recovery_view(r))
            if r["state"] in ended:
                return
            time.sleep(0.5)


@app.command()
def history(
    server: Annotated[str | None, typer.Option(help="Only this server.")] = None,
    host: Annotated[str | None, typer.Option(help="Only evacuations away from this host.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """The evacuation history: every server moved, from where to where, and how it went."""
    query = "&".join(f"{k}={v}" for k, v in (("server", server), ("host", host)) if v)
    data = api_get(url, token, "/v1/history" + (f"?{query}" if query else ""))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="evacuation history", title_justify="left")
    for col in ("started", "server", "from", "to", "result", "attempts", "recovery"):
        table.add_column(col)
    for e in data["evacuations"]:
        table.add_row(
            _clock(e["started_at"]), e["server_name"], e["from_host"], e["to_host"] or "-",
            e["result"], str(e["attempts"]), e["recovery_id"],
        )  # fmt: skip
    Console().print(table)


@app.command()
def audit(
    subject: Annotated[str | None, typer.Option(help="Only this host or server.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonOption = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
) -> None:
    """The operator log: every verdict and recovery step, newest first."""
    query = f"?limit={limit}" + (f"&subject={subject}" if subject else "")
    data = api_get(url, token, "/v1/audit" + query)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="audit", title_justify="left")
    for col in ("at", "kind", "subject", "actor", "detail"):
        table.add_column(col)
    for e in data["events"]:
        detail = json.dumps(e["detail"])
        table.add_row(e["at"], e["kind"], e["subject"], e["actor"], detail[:80])
    Console().print(table)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _print_incident(inc: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"[bold]incident {inc['id']}[/] host {inc['host']} ({inc['zone']}), "
        f"{inc['kind']}, [bold]{inc['state']}[/]"
    )
    if inc.get("held_reason"):
        console.print(f"[red]held: {inc['held_reason']}")
    for v in inc["verdicts"]:
        console.print(f"  {_clock(v['at'])}  verdict {v['kind']} {v.get('subject') or ''}")
    actions = Table(title="actions", title_justify="left")
    for col in ("action", "target", "value", "result", "attempts", "ms"):
        actions.add_column(col)
    for a in inc["actions"]:
        result = "skipped" if a.get("skipped") else ("ok" if a["ok"] else f"failed: {a['error']}")
        took = f"{(a['ended'] - a['started']) * 1000:.0f}" if "ended" in a else "-"
        actions.add_row(
            a["kind"], a["target"], a["value"], result, str(a.get("attempts", "-")), took
        )
    console.print(actions)
    for e in inc["events"]:
        console.print(
            f"  {_clock(e['at'])}  {e['count']} events ({', '.join(e['types'])}), "
            f"{e['deliveries']} webhooks"
        )


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to the newest version."""
    settings = settings_or_exit(config)
    try:
        db = Database(settings.storage.url)
    except StorageError as exc:
        raise fail(str(exc)) from None
    try:
        db.migrate()
        typer.echo(f"{db.display_url}: schema at revision {db.current_revision()}")
    except StorageError as exc:
        raise fail(str(exc)) from None
    finally:
        db.dispose()


@config_app.command("reference")
def config_reference(
    write: Annotated[
        Path | None,
        typer.Option(
            help="Refresh the reference between the markers of this Markdown file "
            "(docs/configuration.md) instead of printing it."
        ),
    ] = None,
) -> None:
    """Every configuration key: its type, default, environment variable and meaning."""
    from medevac import config_reference as reference

    if write is None:
        typer.echo(reference.render(), nl=False)
        return
    try:
        changed = reference.write(write)
    except OSError as exc:
        raise fail(f"{write}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"{write}: {exc}") from None
    typer.echo(f"{write}: {'reference updated' if changed else 'reference already current'}")

"""``medevac`` command line: the controller, its database, and the lab."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medevac import __version__
from medevac.config import ConfigError, Settings, load_settings
from medevac.storage import Database, StorageError

app = typer.Typer(
    name="medevac",
    help="Fault management and VM high availability for OpenStack clouds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The controller's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (default: $MEDEVAC_CONFIG).",
        envvar="MEDEVAC_CONFIG",
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error the way every command does and return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


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
        asyncio.run(Controller(settings).run())
    except StorageError as exc:
        raise fail(str(exc)) from None


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to the newest version."""
    settings = settings_or_exit(config)
    db = Database(settings.storage.url)
    try:
        db.migrate()
        typer.echo(f"{db.display_url}: schema at revision {db.current_revision()}")
    except StorageError as exc:
        raise fail(str(exc)) from None
    finally:
        db.dispose()


def _register_lab() -> None:
    # The lab is a development surface; the controller itself never imports it.
    from medevac.cli.lab import demo, lab_app

    app.add_typer(lab_app, name="lab")
    app.command()(demo)


_register_lab()

"""How every command reports an error: one red line on stderr, exit code 1."""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True)


def fail(message: object, code: int = 1) -> typer.Exit:
    """Print the error and return the exit to raise (``raise fail(...) from None``)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)

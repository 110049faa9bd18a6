"""``python -m medevac``: the same as the ``medevac`` command."""

from medevac.cli.main import app

app()

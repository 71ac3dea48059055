"""The Typer application: ``serve``, ``migrate`` and ``runs``."""

from __future__ import annotations

import typer

from ._migrate import migrate
from ._runs import runs
from ._serve import serve

app = typer.Typer(
    name="llama-workflows-asgi",
    help="Serve durable LlamaIndex workflows and look after their runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.add_typer(migrate, name="migrate")
app.add_typer(runs, name="runs")

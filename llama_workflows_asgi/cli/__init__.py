"""The ``llama-workflows-asgi`` command line (``pip install 'llama_workflows_asgi[cli]'``).

::

    llama-workflows-asgi serve app:workflows --db postgresql://... --port 8000
    llama-workflows-asgi migrate upgrade --db postgresql://...
    llama-workflows-asgi runs list --status failed --newer-than 1d
    llama-workflows-asgi runs show HANDLER_ID
    llama-workflows-asgi runs cancel HANDLER_ID
    llama-workflows-asgi runs retry HANDLER_ID
    llama-workflows-asgi runs prune --older-than 30d --dry-run

It talks to the database directly: ``--db URL``, else
``$LLAMA_WORKFLOWS_DATABASE_URL``, else ``./handlers.db``. Exit codes (see
:class:`~llama_workflows_asgi.cli._common.ExitCode`): 0 done, 1 unexpected
error, 2 bad usage (options, URL, target), 3 database unreachable, 4 schema
missing or outdated, 5 handler not found, 6 refused by the handler's state.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line (exits with one of the documented codes)."""
    try:
        from ._app import app
    except ImportError as error:  # the [cli] extra is not installed
        print(
            f"error: the command line needs Typer ({error}); "
            "install it with: pip install 'llama_workflows_asgi[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    app()

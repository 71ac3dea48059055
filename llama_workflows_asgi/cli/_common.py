"""What every command shares: exit codes, the database option, errors, output."""

from __future__ import annotations

import asyncio
import enum
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy import URL
from sqlalchemy.exc import ArgumentError

from ..errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    SchemaError,
    StoreUnavailableError,
)
from ..store._engines import is_memory_sqlite, normalize_url, safe_url
from ..store._errors import unavailable
from ..store.migrate import URL_ENV_VAR, database_url
from ..store.sqlalchemy import SqlAlchemyWorkflowStore

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class ExitCode(enum.IntEnum):
    """The command line's exit codes, for scripts."""

    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad options, database URL or serve target (Click's own code for usage)
    UNAVAILABLE = 3  # the database cannot be reached
    SCHEMA = 4  # the workflow tables are missing or outdated
    NOT_FOUND = 5  # no such handler
    CONFLICT = 6  # the handler's state refuses the action (cancel a finished run...)


Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=URL_ENV_VAR,
        help="Database URL (SQLite or PostgreSQL); default ./handlers.db.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class UsageError(Exception):
    """A bad value the user gave (a URL, a duration, a target)."""


def fail(code: ExitCode, message: str) -> typer.Exit:
    """Print ``message`` on stderr; the ``typer.Exit`` to raise with ``code``."""
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(int(code))


def run(action: Callable[[], Awaitable[T]]) -> T:
    """Run an async command, turning known errors into a message and an exit code."""
    try:
        return asyncio.run(_awaited(action))
    except typer.Exit:
        raise
    except (UsageError, BadRequestError) as error:
        raise fail(ExitCode.USAGE, str(error)) from None
    except SchemaError as error:
        hint = "With this command line: llama-workflows-asgi migrate upgrade --db URL"
        raise fail(ExitCode.SCHEMA, f"{error}\n{hint}") from None
    except NotFoundError as error:
        raise fail(ExitCode.NOT_FOUND, str(error)) from None
    except ConflictError as error:
        raise fail(ExitCode.CONFLICT, str(error)) from None
    except StoreUnavailableError as error:
        raise fail(ExitCode.UNAVAILABLE, str(error)) from None
    except Exception as error:
        outage = unavailable(error)
        if outage is None:
            raise
        raise fail(ExitCode.UNAVAILABLE, f"cannot reach the database: {outage}") from None


async def _awaited(action: Callable[[], Awaitable[T]]) -> T:
    return await action()


def parse_url(db: str | None) -> URL:
    """The database URL to use; raises ``UsageError`` for one that is not SQLite or PostgreSQL."""
    text = database_url(db)
    try:
        return normalize_url(text)
    except (ArgumentError, ValueError) as error:
        raise UsageError(f"bad database URL {text!r}: {error}") from None


@asynccontextmanager
async def open_store(db: str | None) -> AsyncIterator[SqlAlchemyWorkflowStore]:
    """The store on ``db``, never migrating it: a missing schema is an error to report."""
    url = parse_url(db)
    _require_sqlite_file(url)
    options = {"connect_args": {"timeout": 10}} if url.get_backend_name() == "postgresql" else {}
    store = SqlAlchemyWorkflowStore(url, migrate=False, engine_options=options)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def _require_sqlite_file(url: URL) -> None:
    # Opening a missing SQLite file would create an empty one.
    sqlite = url.get_backend_name() == "sqlite" and not is_memory_sqlite(url)
    if sqlite and not Path(str(url.database)).is_file():
        raise SchemaError(f"There is no SQLite database at {safe_url(url)}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``1d12h``, ``90m``, ``45s``, ``2w``; raises ``typer.BadParameter``."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise typer.BadParameter(f"{text!r} is not a duration such as 30d, 12h, 1d12h or 90m")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: float(number)})
    return total


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout (plain, so it pipes into ``jq``)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")

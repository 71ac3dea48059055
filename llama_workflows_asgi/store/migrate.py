"""Running this package's Alembic migrations from code, and a small CLI.

The migration scripts ship inside the package (``llama_workflows_asgi.migrations``,
the repository's ``migrations/`` directory) and keep their revision in their
own version table, ``workflow_alembic_version``, so they live beside a host's
migrations in one database. Deployments run::

    python -m llama_workflows_asgi.migrations upgrade --url postgresql://user:pw@host/db

which is the same as ``alembic -x url=... upgrade head`` with the repository's
``alembic.ini``. Without ``--url`` the URL comes from ``LLAMA_WORKFLOWS_DATABASE_URL``,
else it is the SQLite default ``sqlite+aiosqlite:///handlers.db``.

Several processes may migrate at once: on PostgreSQL the migrating
transaction holds an advisory lock; on SQLite it starts with
``BEGIN IMMEDIATE``, so the version check happens under the write lock and
the second process finds the work done.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import URL, Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..errors import SchemaError
from ._engines import DEFAULT_URL, normalize_url, safe_url
from ._errors import unavailable
from .schema import VERSION_TABLE

if TYPE_CHECKING:  # Alembic costs ~150 ms to import: only the functions that use it do
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "URL_ENV_VAR",
    "check_schema",
    "current_revision",
    "database_url",
    "downgrade",
    "head_revision",
    "is_known_revision",
    "main",
    "run_locked",
    "script_directory",
    "upgrade",
    "upgrade_command",
]

URL_ENV_VAR = "LLAMA_WORKFLOWS_DATABASE_URL"
"""Environment variable the CLI and ``alembic`` read when no URL is given."""

# Key of the PostgreSQL advisory lock serializing migrations ("workflow" in ASCII).
_ADVISORY_LOCK_KEY = 0x776F726B666C6F77
_PACKAGE = "llama_workflows_asgi.migrations"

T = TypeVar("T")
Target = AsyncEngine | AsyncConnection


def script_directory() -> str:
    """The directory holding ``env.py`` and ``versions/``.

    Found through the ``llama_workflows_asgi.migrations`` package, so it works
    from an installed wheel; a source checkout that is not installed falls back
    to the repository's ``migrations/`` directory.
    """
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))))
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    raise SchemaError(f"Cannot find the {_PACKAGE} scripts; is the package installed?")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the packaged scripts, optionally bound to ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_directory())
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    # The packaged scripts cannot change while the process runs: parse them once.
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision the packaged migrations define."""
    head = _scripts().get_current_head()
    if head is None:
        raise SchemaError("The packaged migrations define no revision")
    return head


def database_url(url: str | None = None) -> str:
    """``url``, else ``$LLAMA_WORKFLOWS_DATABASE_URL``, else the SQLite default."""
    return url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL


def upgrade_command(url: str | URL | None = None) -> str:
    """The shell command that brings the database at ``url`` to head."""
    shown = safe_url(normalize_url(url)) if url is not None else "<database url>"
    return f"python -m {_PACKAGE} upgrade --url '{shown}'"


async def current_revision(target: Target) -> str | None:
    """The revision recorded in the database, or ``None`` if it has none."""
    return await _run_sync(target, _read_revision)


async def upgrade(target: Target, revision: str = "head") -> None:
    """Migrate the database forward to ``revision``, under the migration lock.

    ``target`` is an engine, or a host's connection: if that connection has a
    transaction in progress, the migration joins it and the host commits.
    """
    from alembic import command

    await _run_sync(target, lambda conn: run_locked(conn, _alembic(command.upgrade, revision)))


async def downgrade(target: Target, revision: str) -> None:
    """Migrate the database back to ``revision`` (``"base"`` drops every table)."""
    from alembic import command

    await _run_sync(target, lambda conn: run_locked(conn, _alembic(command.downgrade, revision)))


async def check_schema(target: Target) -> None:
    """Raise ``SchemaError`` unless the database is at :func:`head_revision`.

    The message says what is wrong and names the command that fixes it.
    """
    current, head = await current_revision(target), head_revision()
    if current == head:
        return
    url = _url_of(target)
    fix = f"run `{upgrade_command(url)}` (or `alembic upgrade head`)"
    if current is None:
        raise SchemaError(
            f"The workflow tables are missing from {safe_url(url)} "
            f"(no revision in {VERSION_TABLE}): {fix}, or start the store with migrate=True."
        )
    if not is_known_revision(current):
        raise SchemaError(
            f"The database {safe_url(url)} is at revision {current!r}, which this version of "
            f"llama_workflows_asgi does not know (newest: {head!r}); upgrade the package."
        )
    raise SchemaError(
        f"The workflow tables in {safe_url(url)} are at revision {current!r}, "
        f"older than {head!r}: {fix}, or start the store with migrate=True."
    )


def run_locked(connection: Connection, migrate: Callable[[Connection], None]) -> None:
    """Run ``migrate`` in a transaction holding the migration lock.

    Joins a transaction already open on ``connection`` (the caller commits it);
    otherwise begins one and commits it.
    """
    if connection.in_transaction():
        _lock(connection)
        migrate(connection)
        return
    with connection.begin():
        _lock(connection)
        migrate(connection)


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Transaction-scoped: released by the commit that publishes the schema.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    elif connection.dialect.name == "sqlite" and not _sqlite_in_transaction(connection):
        # Take the write lock before Alembic reads the version table.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_in_transaction(connection: Connection) -> bool:
    # The store's own engines already emitted BEGIN IMMEDIATE in their "begin"
    # event; any other engine (a host's, Alembic's) has not begun at all yet.
    driver = connection.connection.driver_connection
    return bool(getattr(driver, "in_transaction", False))


def _alembic(action: Callable[[Config, str], None], revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        action(alembic_config(connection), revision)

    return run


def _read_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def is_known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of the packaged migrations (not a newer package's)."""
    return any(script.revision == revision for script in _scripts().walk_revisions())


def _url_of(target: Target) -> URL:
    engine = target.engine if isinstance(target, AsyncConnection) else target
    return engine.url


async def _run_sync(target: Target, fn: Callable[[Connection], T]) -> T:
    if isinstance(target, AsyncConnection):
        return await target.run_sync(fn)
    async with target.connect() as conn:
        return await conn.run_sync(fn)


# -- command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llama_workflows_asgi.migrations {upgrade,downgrade,current,check}``.

    Exits 1 when ``check`` finds the schema missing or old, 2 when the database
    cannot be reached.
    """
    args = _parser().parse_args(argv)
    try:
        print(asyncio.run(_run_cli(args)))
    except SchemaError as error:
        print(error, file=sys.stderr)
        return 1
    except Exception as error:
        outage = unavailable(error)
        if outage is None:
            raise
        print(f"error: {outage}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help=f"database URL (default: ${URL_ENV_VAR}, else {DEFAULT_URL})")
    parser = argparse.ArgumentParser(
        prog=f"python -m {_PACKAGE}", description="Manage the workflow tables' schema."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", parents=[url], help="migrate forward (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = commands.add_parser("downgrade", parents=[url], help="migrate back ('base': drop all)")
    down.add_argument("revision")
    commands.add_parser("current", parents=[url], help="print the database's revision")
    commands.add_parser("check", parents=[url], help="fail unless the database is at head")
    return parser


async def _run_cli(args: argparse.Namespace) -> str:
    engine = create_async_engine(normalize_url(database_url(args.url)), poolclass=NullPool)
    try:
        if args.command == "current":
            return await current_revision(engine) or "(none)"
        if args.command == "check":
            await check_schema(engine)
            return f"{safe_url(engine.url)} is at head ({head_revision()})"
        migrate = upgrade if args.command == "upgrade" else downgrade
        await migrate(engine, args.revision)
        return f"{safe_url(engine.url)} is now at {await current_revision(engine) or 'base'}"
    finally:
        await engine.dispose()

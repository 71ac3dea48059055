"""``migrate``: the schema migrations (as in ``python -m llama_workflows_asgi.migrations``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ..store import migrate as migrations
from ..store._engines import safe_url
from ._common import Db, UsageError, out, parse_url, run

migrate = typer.Typer(help="Create or upgrade the workflow tables.", no_args_is_help=True)


def _on_engine(db: str | None, action: Callable[[AsyncEngine], Awaitable[str]]) -> None:
    async def go() -> str:
        from alembic.util import CommandError  # imported when migrating: Alembic is slow to load

        # Inside ``run``: a bad URL or an unknown revision is a usage error, not a traceback.
        engine = create_async_engine(parse_url(db), poolclass=NullPool)
        try:
            return await action(engine)
        except CommandError as error:
            raise UsageError(str(error)) from None
        finally:
            await engine.dispose()

    out.print(run(go), highlight=False)


@migrate.command("upgrade")
def upgrade(revision: Annotated[str, typer.Argument()] = "head", db: Db = None) -> None:
    """Migrate forward (to head by default); creates the tables in a new database."""

    async def action(engine: AsyncEngine) -> str:
        await migrations.upgrade(engine, revision)
        return f"{safe_url(engine.url)} is now at {await migrations.current_revision(engine)}"

    _on_engine(db, action)


@migrate.command("downgrade")
def downgrade(revision: str, db: Db = None) -> None:
    """Migrate back to REVISION ('base' drops every workflow table)."""

    async def action(engine: AsyncEngine) -> str:
        await migrations.downgrade(engine, revision)
        current = await migrations.current_revision(engine)
        return f"{safe_url(engine.url)} is now at {current or 'base'}"

    _on_engine(db, action)


@migrate.command("current")
def current(db: Db = None) -> None:
    """Print the database's revision."""

    async def action(engine: AsyncEngine) -> str:
        return await migrations.current_revision(engine) or "(none)"

    _on_engine(db, action)


@migrate.command("check")
def check(db: Db = None) -> None:
    """Exit 0 if the database is at head, 4 if its schema is missing or old."""

    async def action(engine: AsyncEngine) -> str:
        await migrations.check_schema(engine)
        return f"{safe_url(engine.url)} is at head ({migrations.head_revision()})"

    _on_engine(db, action)

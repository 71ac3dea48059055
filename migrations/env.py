"""Alembic environment for llama_workflows_asgi's tables.

Three ways in:

* ``alembic [-x url=...] upgrade head`` (repository ``alembic.ini``): the URL comes
  from ``-x url=``, else ``$LLAMA_WORKFLOWS_DATABASE_URL``, else the SQLite default;
  async URLs are run through an ``AsyncEngine`` and ``connection.run_sync``.
* ``llama_workflows_asgi.store.migrate`` (the store, the CLI, a host's code) hands
  over an open connection in ``config.attributes["connection"]`` (the Alembic
  cookbook recipe) after taking the migration lock itself.
* ``alembic upgrade head --sql``: offline mode, prints the SQL.

Only ``workflow_``-prefixed tables are considered and the revision lives in
``workflow_alembic_version``, so a host's tables and its ``alembic_version``
in the same database are never touched.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.store._engines import normalize_url
from llama_workflows_asgi.store.migrate import database_url, run_locked
from llama_workflows_asgi.store.schema import VERSION_TABLE, metadata, only_workflow_tables

config = context.config

if config.config_file_name is not None:
    # Keep the host's loggers alive when its process runs our migrations.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return database_url(context.get_x_argument(as_dictionary=True).get("url"))


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=only_workflow_tables,
        compare_type=True,
        compare_server_default=True,
        **options,
    )


def run_migrations_offline() -> None:
    url = normalize_url(_url())
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # SQLite cannot ALTER most things in place: batch mode copies the table.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(normalize_url(_url()), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_locked, do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)  # the caller holds the lock and the transaction
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

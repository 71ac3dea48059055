"""The Alembic migrations: CLI, drift against the models, startup behaviour, host coexistence."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.errors import SchemaError
from llama_workflows_asgi.store import SqlAlchemyWorkflowStore, SqliteWorkflowStore, metadata
from llama_workflows_asgi.store import migrate as migrations
from llama_workflows_asgi.store._rows import handler_values
from llama_workflows_asgi.store.schema import (
    VERSION_TABLE,
    exclude_workflow_tables,
    handlers_table,
    only_workflow_tables,
    owners_table,
)
from tests.support.factories import handler
from tests.support.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
OUR_TABLES = {"workflow_handlers", "workflow_events", "workflow_inbox", "workflow_owners"}


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to success and return its combined output."""
    environ = {k: v for k, v in os.environ.items() if k != migrations.URL_ENV_VAR}
    result = subprocess.run(
        args, cwd=cwd, env=environ | (env or {}), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def alembic(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run(
        sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *args, cwd=cwd, env=env
    )


async def inspect_db(url: str, look: Callable[[Connection], Any]) -> Any:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(look)
    finally:
        await engine.dispose()


def tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"sqlite_sequence"}


def versions(conn: Connection, table: str = VERSION_TABLE) -> list[str]:
    return [row[0] for row in conn.execute(text(f"SELECT version_num FROM {table}"))]


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each dialect."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(migrated=False)


# -- the alembic command line ----------------------------------------------------------


async def test_alembic_upgrade_and_downgrade(empty_url: str, tmp_path: Path) -> None:
    alembic("-x", f"url={empty_url}", "upgrade", "head", cwd=tmp_path)
    assert await inspect_db(empty_url, tables) == OUR_TABLES | {VERSION_TABLE}
    assert await inspect_db(empty_url, versions) == [migrations.head_revision()]

    # The environment variable is the second source of the URL.
    alembic("downgrade", "base", cwd=tmp_path, env={migrations.URL_ENV_VAR: empty_url})
    assert await inspect_db(empty_url, tables) == {VERSION_TABLE}
    assert await inspect_db(empty_url, versions) == []


def test_alembic_defaults_to_handlers_db_in_the_working_directory(tmp_path: Path) -> None:
    alembic("upgrade", "head", cwd=tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'handlers.db'}"
    assert asyncio.run(inspect_db(url, tables)) == OUR_TABLES | {VERSION_TABLE}


def test_module_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert migrations.main(["check", "--url", url]) == 1
    assert "upgrade --url" in capsys.readouterr().err
    assert migrations.main(["upgrade", "--url", url]) == 0
    head = migrations.head_revision()
    assert capsys.readouterr().out.strip().endswith(f"cli.db is now at {head}")
    assert migrations.main(["current", "--url", url]) == 0
    assert capsys.readouterr().out.strip() == migrations.head_revision()
    assert migrations.main(["check", "--url", url]) == 0
    assert f"is at head ({head})" in capsys.readouterr().out
    assert migrations.main(["downgrade", "base", "--url", url]) == 0
    assert capsys.readouterr().out.strip().endswith("is now at base")
    assert migrations.main(["current", "--url", url]) == 0
    assert capsys.readouterr().out.strip() == "(none)"
    assert migrations.main(["current", "--url", "postgresql://u@127.0.0.1:1/x"]) == 2
    assert "cannot reach the database" in capsys.readouterr().err


def test_scripts_are_found_through_the_package() -> None:
    location = Path(migrations.script_directory())
    assert (location / "env.py").is_file()
    assert (location / "versions" / "0001_initial_schema.py").is_file()
    assert (location / "versions" / "0002_owner_heartbeats.py").is_file()
    assert (location / "versions" / "0003_workflow_versions.py").is_file()
    assert migrations.head_revision() == "0003_workflow_versions"


async def test_versions_revision_keeps_old_rows_and_goes_back(empty_url: str) -> None:
    """0001 rows survive the upgrade with a NULL version; the downgrade drops the column."""
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        await migrations.upgrade(engine, "0001")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO workflow_handlers (handler_id, workflow_name, status, started_at) "
                    "VALUES ('old', 'greet', 'running', CURRENT_TIMESTAMP)"
                )
            )
        await migrations.upgrade(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT handler_id, version FROM workflow_handlers"))
            assert rows.all() == [("old", None)]
        await migrations.downgrade(engine, "0001")
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("workflow_handlers")}
            )
            count = await conn.scalar(text("SELECT count(*) FROM workflow_handlers"))
    finally:
        await engine.dispose()
    assert "version" not in columns
    assert count == 1


# -- models and migrations never drift -------------------------------------------------


async def test_migrated_database_matches_the_models(empty_url: str) -> None:
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        await migrations.upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff, only_workflow_tables)
    finally:
        await engine.dispose()
    assert diff == []


def _diff(conn: Connection, include_name: Any) -> list[Any]:
    options = {"include_name": include_name, "compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(conn, opts=options | {"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


async def test_drift_check_is_not_blind(tmp_path: Path) -> None:
    """The comparison above does notice a schema that differs from the models."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'drift.db'}"
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await migrations.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("DROP INDEX ix_workflow_handlers_owner_id"))
            await conn.execute(text("ALTER TABLE workflow_inbox ADD COLUMN extra TEXT"))
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff, only_workflow_tables)
    finally:
        await engine.dispose()
    assert {entry[0] for entry in diff} == {"add_index", "remove_column"}


# -- 0002: owner heartbeats -------------------------------------------------------------


async def test_owner_heartbeats_revision_keeps_live_leases(empty_url: str) -> None:
    """Upgrading a 0001 database: runs with a live lease keep their owner; and back."""
    now = datetime.now(timezone.utc)
    hour = timedelta(hours=1)
    rows = [
        handler("live-1", owner_id="alive", lease_expires_at=now + hour),
        handler("live-2", owner_id="alive", lease_expires_at=now + 2 * hour),
        handler("stale", owner_id="gone", lease_expires_at=now - hour),
        handler("done", owner_id="over", status="completed", lease_expires_at=now + hour),
        handler("free"),
    ]
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        await migrations.upgrade(engine, "0001")
        async with engine.begin() as conn:
            # Rows as 0001 knew them: the columns of later revisions are not there yet.
            values = [handler_values(h) for h in rows]
            await conn.execute(
                insert(handlers_table),
                [{k: v for k, v in row.items() if k != "version"} for row in values],
            )
        await migrations.upgrade(engine, "0002_owner_heartbeats")
        assert await _owner_expiries(engine) == {"alive": now + 2 * hour}

        await migrations.upgrade(engine)
        store = SqlAlchemyWorkflowStore(empty_url)
        await store.start()
        try:
            claimed = await store.claim_handlers("new", now=now, lease_until=now + hour / 60)
        finally:
            await store.close()
        assert [h.handler_id for h in claimed] == ["free", "stale"]

        await migrations.downgrade(engine, "0001")
        assert "workflow_owners" not in await inspect_db(empty_url, tables)
        assert await _leases(engine) == {
            "live-1": ("alive", now + 2 * hour),
            "live-2": ("alive", now + 2 * hour),
            "stale": ("new", now + hour / 60),
            "free": ("new", now + hour / 60),
            "done": ("over", now + hour),
        }
    finally:
        await engine.dispose()


async def _owner_expiries(engine: AsyncEngine) -> dict[str, datetime]:
    o = owners_table.c
    async with engine.connect() as conn:
        return {
            row.owner_id: row.expires_at
            for row in await conn.execute(select(o.owner_id, o.expires_at))
        }


async def _leases(engine: AsyncEngine) -> dict[str, tuple[str | None, datetime | None]]:
    h = handlers_table.c
    stmt = select(h.handler_id, h.owner_id, h.lease_expires_at)
    async with engine.connect() as conn:
        return {r.handler_id: (r.owner_id, r.lease_expires_at) for r in await conn.execute(stmt)}


# -- the module's functions ------------------------------------------------------------


def test_the_url_comes_from_the_argument_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(migrations.URL_ENV_VAR, raising=False)
    assert migrations.database_url() == "sqlite+aiosqlite:///handlers.db"
    monkeypatch.setenv(migrations.URL_ENV_VAR, "postgresql://env/db")
    assert migrations.database_url() == "postgresql://env/db"
    assert migrations.database_url("sqlite:///given.db") == "sqlite:///given.db"


def test_the_upgrade_command_names_the_database_without_its_password() -> None:
    command = migrations.upgrade_command("postgresql://app:s3cret@db/app")
    assert command == (
        "python -m llama_workflows_asgi.migrations upgrade "
        "--url 'postgresql+asyncpg://app:***@db/app'"
    )
    assert migrations.upgrade_command().endswith("--url '<database url>'")


def test_only_packaged_revisions_are_known() -> None:
    assert migrations.is_known_revision(migrations.head_revision())
    assert migrations.is_known_revision("0001")
    assert not migrations.is_known_revision("9999_from_the_future")


async def test_check_schema_says_how_old_the_schema_is(empty_url: str) -> None:
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        with pytest.raises(SchemaError, match="missing"):
            await migrations.check_schema(engine)
        await migrations.upgrade(engine, "0002_owner_heartbeats")
        assert await migrations.current_revision(engine) == "0002_owner_heartbeats"
        with pytest.raises(SchemaError, match=r"'0002_owner_heartbeats', older than"):
            await migrations.check_schema(engine)
        await migrations.upgrade(engine)
        await migrations.check_schema(engine)
    finally:
        await engine.dispose()


async def test_a_migration_on_a_hosts_connection_joins_its_transaction(empty_url: str) -> None:
    engine = create_async_engine(empty_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            await migrations.upgrade(conn)
            assert await migrations.current_revision(conn) == migrations.head_revision()
            await conn.rollback()  # the host decides: nothing was committed
        assert await migrations.current_revision(engine) is None
        async with engine.begin() as conn:
            await migrations.upgrade(conn)
        assert await migrations.current_revision(engine) == migrations.head_revision()
    finally:
        await engine.dispose()


# -- what the store does at startup ----------------------------------------------------


async def test_sqlite_store_creates_the_schema_of_an_empty_file(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(tmp_path / "new.db")
    await store.start()
    await store.close()
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    assert await inspect_db(url, versions) == [migrations.head_revision()]


async def test_sqlite_store_upgrades_an_outdated_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    alembic("-x", f"url={url}", "stamp", "base", cwd=tmp_path)  # version table, no revision
    assert await inspect_db(url, tables) == {VERSION_TABLE}
    store = SqlAlchemyWorkflowStore(url)
    await store.start()
    await store.close()
    assert await inspect_db(url, tables) == OUR_TABLES | {VERSION_TABLE}


async def test_sqlite_store_told_not_to_migrate_refuses(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(tmp_path / "x.db", migrate=False)
    with pytest.raises(SchemaError, match=r"missing .*upgrade --url"):
        await store.start()


async def test_store_refuses_a_schema_newer_than_the_package(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'future.db'}"
    await SqlAlchemyWorkflowStore(url).start()
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    await engine.dispose()
    with pytest.raises(SchemaError, match="'9999', which this version"):
        await SqlAlchemyWorkflowStore(url).start()


async def test_postgres_store_refuses_a_missing_schema(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(migrated=False)
    store = SqlAlchemyWorkflowStore(url)
    with pytest.raises(SchemaError) as caught:
        await store.start()
    message = str(caught.value)
    assert f"python -m llama_workflows_asgi.migrations upgrade --url '{url}'" in message
    assert "alembic upgrade head" in message
    assert "migrate=True" in message


async def test_postgres_store_refuses_an_outdated_schema(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url, poolclass=NullPool)
    await migrations.downgrade(engine, "base")
    await engine.dispose()
    with pytest.raises(SchemaError, match="missing"):
        await SqlAlchemyWorkflowStore(postgres_url).start()


async def test_postgres_stores_migrating_together(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database(migrated=False)
    stores = [SqlAlchemyWorkflowStore(url, migrate=True) for _ in range(8)]
    await asyncio.gather(*(store.start() for store in stores))
    for store in stores:
        await store.ping()
        await store.close()
    assert await inspect_db(url, versions) == [migrations.head_revision()]


async def test_engines_migrating_one_sqlite_file_together(tmp_path: Path) -> None:
    """Plain engines (no store listeners): the migration itself takes the write lock."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    engines = [create_async_engine(url, poolclass=NullPool) for _ in range(8)]
    try:
        await asyncio.gather(*(migrations.upgrade(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert await inspect_db(url, versions) == [migrations.head_revision()]


def test_processes_migrating_together(empty_url: str, tmp_path: Path) -> None:
    """Several processes start at once, as replicas do: one migrates, the others wait."""
    code = (
        "import sys; from llama_workflows_asgi.store.migrate import main; "
        "sys.exit(main(['upgrade', '--url', sys.argv[1]]))"
    )
    env = os.environ | {"PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_url], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    assert asyncio.run(inspect_db(empty_url, versions)) == [migrations.head_revision()]


# -- living beside a host's own Alembic history ---------------------------------------

HOST_ENV = """
from alembic import context
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

from llama_workflows_asgi.store.schema import exclude_workflow_tables

host_metadata = MetaData()
Table("host_items", host_metadata, Column("id", Integer, primary_key=True),
      Column("name", String(50), nullable=False))

url = context.get_x_argument(as_dictionary=True)["url"]
with create_engine(url).connect() as connection:
    context.configure(connection=connection, target_metadata=host_metadata,
                      include_name=exclude_workflow_tables)
    with context.begin_transaction():
        context.run_migrations()
"""

HOST_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "host1"
down_revision = None

def upgrade():
    op.create_table("host_items", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(50), nullable=False))

def downgrade():
    op.drop_table("host_items")
"""


def _host_project(root: Path) -> Path:
    (root / "host_migrations" / "versions").mkdir(parents=True)
    (root / "host_migrations" / "env.py").write_text(textwrap.dedent(HOST_ENV))
    (root / "host_migrations" / "versions" / "host1_items.py").write_text(HOST_REVISION)
    ini = root / "host_alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {root / 'host_migrations'}\n")
    return ini


def test_host_alembic_and_ours_share_a_database(tmp_path: Path) -> None:
    host_ini = _host_project(tmp_path)
    db = tmp_path / "shared.db"
    host = [sys.executable, "-m", "alembic", "-c", str(host_ini), "-x", f"url=sqlite:///{db}"]
    env = {"PYTHONPATH": str(REPO)}

    run(*host, "upgrade", "head", cwd=tmp_path, env=env)
    assert migrations.main(["upgrade", "--url", f"sqlite:///{db}"]) == 0

    url = f"sqlite+aiosqlite:///{db}"
    assert asyncio.run(inspect_db(url, tables)) == OUR_TABLES | {
        VERSION_TABLE, "alembic_version", "host_items"
    }  # fmt: skip
    assert asyncio.run(inspect_db(url, lambda c: versions(c, "alembic_version"))) == ["host1"]
    assert asyncio.run(inspect_db(url, versions)) == [migrations.head_revision()]

    # Each side's autogenerate sees nothing to do: neither wants the other's tables.
    assert "No new upgrade operations detected" in run(*host, "check", cwd=tmp_path, env=env)
    assert "No new upgrade operations detected" in alembic(
        "-x", f"url={url}", "check", cwd=tmp_path
    )

    # The filters are what keeps each side off the other's tables.
    host_view = asyncio.run(inspect_db(url, lambda c: _host_diff(c, exclude_workflow_tables)))
    assert host_view == []
    unfiltered = asyncio.run(inspect_db(url, lambda c: _host_diff(c, None)))
    assert _dropped(unfiltered) == OUR_TABLES | {VERSION_TABLE}
    assert _dropped(asyncio.run(inspect_db(url, lambda c: _diff(c, None)))) == {
        "host_items", "alembic_version"
    }  # fmt: skip


def _host_diff(conn: Connection, include_name: Any) -> list[Any]:
    host_metadata = MetaData()
    Table(
        "host_items",
        host_metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50), nullable=False),
    )
    context = MigrationContext.configure(conn, opts={"include_name": include_name})
    return list(compare_metadata(context, host_metadata))


def _dropped(diff: list[Any]) -> set[str]:
    return {entry[1].name for entry in diff if entry[0] == "remove_table"}

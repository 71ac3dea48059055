"""``cli._common``: exit codes, the database option, error mapping and output."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer

from llama_workflows_asgi.cli._common import (
    ExitCode,
    UsageError,
    open_store,
    parse_duration,
    parse_url,
    print_json,
    run,
)
from llama_workflows_asgi.errors import (
    BadEventError,
    ConflictError,
    HandlerNotFoundError,
    SchemaError,
    StoreUnavailableError,
)
from llama_workflows_asgi.store import HandlerQuery
from llama_workflows_asgi.store.migrate import URL_ENV_VAR
from tests.support.cli import cli, invoke, listed
from tests.support.postgres import PostgresServer
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(120)


def test_exit_codes_are_the_documented_ones() -> None:
    assert [(code.name, int(code)) for code in ExitCode] == [
        ("OK", 0),
        ("ERROR", 1),
        ("USAGE", 2),
        ("UNAVAILABLE", 3),
        ("SCHEMA", 4),
        ("NOT_FOUND", 5),
        ("CONFLICT", 6),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        (" 1.5H ", timedelta(hours=1.5)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "30", "d30", "1d 2h", "-3d", "3y"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not a duration such as 30d"):
        parse_duration(text)


def test_database_urls_map_onto_async_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_url("sqlite:///runs.db").drivername == "sqlite+aiosqlite"
    assert parse_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    monkeypatch.setenv(URL_ENV_VAR, "postgresql://u@env/db")
    assert parse_url(None).host == "env"
    monkeypatch.delenv(URL_ENV_VAR)
    assert parse_url(None).database == "handlers.db"
    with pytest.raises(UsageError, match="bad database URL 'mysql://db/app'"):
        parse_url("mysql://db/app")
    with pytest.raises(UsageError, match="bad database URL"):
        parse_url("not a url")


def exit_of(
    action: Callable[[], Awaitable[object]], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as raised:
        run(action)
    return raised.value.exit_code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("bad target"), ExitCode.USAGE),
        (BadEventError("bad cursor"), ExitCode.USAGE),
        (HandlerNotFoundError("h"), ExitCode.NOT_FOUND),
        (ConflictError("already cancelled"), ExitCode.CONFLICT),
        (StoreUnavailableError("database is locked"), ExitCode.UNAVAILABLE),
        (ConnectionRefusedError(111, "Connection refused"), ExitCode.UNAVAILABLE),
    ],
)
def test_known_errors_become_a_message_and_an_exit_code(
    error: Exception, code: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fails() -> None:
        raise error

    exit_code, stderr = exit_of(fails, capsys)
    assert exit_code == code
    assert stderr.startswith("error: ")
    assert stderr.count("\n") == 1


def test_a_schema_error_says_how_to_migrate(capsys: pytest.CaptureFixture[str]) -> None:
    async def fails() -> None:
        raise SchemaError("The workflow tables are missing")

    assert exit_of(fails, capsys) == (
        4,
        "error: The workflow tables are missing\n"
        "With this command line: llama-workflows-asgi migrate upgrade --db URL\n",
    )


def test_run_returns_the_result_and_lets_bugs_through() -> None:
    async def answer() -> int:
        return 42

    assert run(answer) == 42

    async def bug() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run(bug)


def test_open_store_never_creates_or_migrates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"

    async def open_missing() -> None:
        async with open_store(f"sqlite:///{missing}"):
            pass

    with pytest.raises(SchemaError, match="There is no SQLite database at"):
        asyncio.run(open_missing())
    assert not missing.exists()


def test_open_store_reads_a_migrated_database(sqlite_db: str) -> None:
    async def count() -> int:
        async with open_store(sqlite_db) as store:
            return len(await store.query(HandlerQuery(load_ctx=False)))

    assert asyncio.run(count()) == 7


def test_print_json_is_indented_and_writes_dates(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"at": datetime(2024, 5, 6, tzinfo=timezone.utc), "n": [1]})
    assert capsys.readouterr().out == (
        '{\n  "at": "2024-05-06 00:00:00+00:00",\n  "n": [\n    1\n  ]\n}\n'
    )


# -- over every database, as a user runs it --------------------------------------------------


def test_bad_urls_and_unmigrated_databases(postgres_server: PostgresServer, tmp_path: Path) -> None:
    bad = invoke("runs", "list", db="mysql://db/app")
    assert (bad.returncode, "Unsupported database" in bad.stderr) == (2, True)
    down = cli("runs", "list", db=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert (down.returncode, "cannot reach the database" in down.stderr) == (3, True)
    missing = invoke("runs", "list", db=f"sqlite:///{tmp_path / 'none.db'}")
    assert (missing.returncode, "no SQLite database" in missing.stderr) == (4, True)
    assert not (tmp_path / "none.db").exists()

    empty = postgres_server.create_database(migrated=False)
    unmigrated = cli("runs", "list", db=empty)
    assert unmigrated.returncode == 4
    assert "migrate upgrade" in unmigrated.stderr
    assert invoke("migrate", "check", db=empty).returncode == 4
    # serve checks the database before it starts listening (PostgreSQL is never migrated by it)
    refused = invoke("serve", "tests.support.cli_app:workflows", "--db", empty)
    assert (refused.returncode, "migrate upgrade" in refused.stderr) == (4, True)
    upgraded = cli("migrate", "upgrade", db=empty)
    assert upgraded.returncode == 0, upgraded.stderr
    assert invoke("migrate", "check", db=empty).returncode == 0
    assert invoke("migrate", "current", db=empty).stdout.strip() == "0003_workflow_versions"
    assert listed(invoke("runs", "list", "--json", db=empty)) == []

"""The ``llama-workflows-asgi`` command on SQLite and PostgreSQL.

Each command runs for real in a subprocess at least once per database, as a
user or a script would run it (``cli``); the finer cases of filters, paging
and exit codes call the same Typer application in-process (``invoke``),
which is the same code without the interpreter start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from llama_workflows_asgi.cli._app import app
from llama_workflows_asgi.cli._common import UsageError
from llama_workflows_asgi.cli._serve import build_app, load_target
from llama_workflows_asgi.store import (
    HandlerQuery,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
    Status,
)
from llama_workflows_asgi.store.base import utcnow
from llama_workflows_asgi.store.migrate import URL_ENV_VAR
from tests.support.factories import event, progress
from tests.support.postgres import PostgresServer
from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.timeout(120)

NOW = utcnow()


def cli(*args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would, with ``db`` in the environment."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    env.pop(URL_ENV_VAR, None)
    if db is not None:
        env[URL_ENV_VAR] = db
    command = [sys.executable, "-m", "llama_workflows_asgi", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert "Traceback" not in result.stderr, result.stderr
    return result


class Invoked:
    """What an in-process run of the command left: exit code and output."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke(*args: str, db: str | None = None) -> Invoked:
    """Run the command line's Typer app in this process."""
    env = {"COLUMNS": "200", URL_ENV_VAR: db}
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return Invoked(result.exit_code, result.stdout, result.stderr)


def as_json(result: subprocess.CompletedProcess[str] | Invoked) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database URL (the SQLite one as a user would spell it)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'cli.db'}"


SEED: list[tuple[str, str, Status, float]] = [
    # handler id, workflow, status, hours ago (started and, when finished, ended)
    ("done-old", "greet", "completed", 40 * 24),
    ("failed-new", "five", "failed", 1),
    ("live", "slow", "running", 0),
    *((f"done-{i}", "greet", "completed", 2 + i) for i in range(4)),
]


@pytest.fixture
def seeded(db: str) -> str:
    """``db`` holding the handlers of ``SEED``, each with three events."""
    asyncio.run(seed(db))
    return db


async def seed(db: str) -> None:
    store = SqlAlchemyWorkflowStore(db, migrate=True)
    await store.start()
    try:
        for handler_id, workflow, status, hours in SEED:
            at = NOW - timedelta(hours=hours)
            row = PersistentHandler(
                handler_id=handler_id,
                workflow_name=workflow,
                status="running",
                run_id=f"run-{handler_id}",
                started_at=at,
                owner_id="elsewhere",
            )
            await store.create_handler(row)
            log = [event(i, created_at=at) for i in range(3)]
            final = "boom in s3\nsecond line" if status == "failed" else None
            assert not await store.save_progress(
                [progress(row, events=log, status=status, error=final, updated_at=at)]
            )
    finally:
        await store.close()


async def rows(db: str) -> dict[str, PersistentHandler]:
    store = SqlAlchemyWorkflowStore(db)
    try:
        return {h.handler_id: h for h in await store.query(HandlerQuery(load_ctx=False))}
    finally:
        await store.close()


def listed(result: subprocess.CompletedProcess[str] | Invoked) -> list[str]:
    return [h["handler_id"] for h in as_json(result)["handlers"]]


# -- runs ----------------------------------------------------------------------------


def test_runs_list_filters_and_pages(seeded: str) -> None:
    newest_first = ["live", "failed-new", "done-0", "done-1", "done-2", "done-3", "done-old"]
    assert listed(cli("runs", "list", "--json", db=seeded)) == newest_first
    assert listed(invoke("runs", "list", "--json", "--status", "failed", db=seeded)) == [
        "failed-new"
    ]
    assert listed(invoke("runs", "list", "--json", "-w", "slow", "-w", "five", db=seeded)) == [
        "live",
        "failed-new",
    ]
    assert listed(invoke("runs", "list", "--json", "--older-than", "30d", db=seeded)) == [
        "done-old"
    ]
    window = ["--newer-than", "3h30m", "--older-than", "30m", "--json"]
    assert listed(invoke("runs", "list", *window, db=seeded)) == ["failed-new", "done-0", "done-1"]
    assert listed(invoke("runs", "list", *window, "--order", "asc", db=seeded)) == [
        "done-1",
        "done-0",
        "failed-new",
    ]

    pages, cursor = [], None
    while True:
        extra = [] if cursor is None else ["--cursor", cursor]
        page = as_json(invoke("runs", "list", "--json", "--limit", "3", *extra, db=seeded))
        pages.append([h["handler_id"] for h in page["handlers"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]

    table = invoke("runs", "list", "--limit", "2", db=seeded)
    assert table.returncode == 0
    assert "failed-new" in table.stdout
    assert "more: --cursor" in table.stdout
    assert invoke("runs", "list", "--status", "lost", db=seeded).returncode == 2
    assert invoke("runs", "list", "--cursor", "not-a-cursor", db=seeded).returncode == 2


def test_runs_show(seeded: str) -> None:
    shown = as_json(cli("runs", "show", "failed-new", "--events", "2", "--json", db=seeded))
    assert (shown["status"], shown["error"]) == ("failed", "boom in s3\nsecond line")
    assert [e["sequence"] for e in shown["events"]] == [1, 2]
    assert "ctx" not in shown
    table = invoke("runs", "show", "failed-new", db=seeded)
    assert table.returncode == 0
    assert "second line" in table.stdout
    assert "run-failed-new" in table.stdout
    missing = invoke("runs", "show", "nope", db=seeded)
    assert (missing.returncode, missing.stderr.strip()) == (5, "error: Handler 'nope' not found")


def test_runs_cancel_retry_and_prune(seeded: str) -> None:
    assert as_json(cli("runs", "cancel", "live", "--json", db=seeded))["status"] == "cancelled"
    again = invoke("runs", "cancel", "live", db=seeded)
    assert (again.returncode, "already cancelled" in again.stderr) == (6, True)

    retried = as_json(cli("runs", "retry", "failed-new", "--json", db=seeded))
    assert (retried["status"], retried["error"], retried["owner_id"]) == ("running", None, None)
    refused = invoke("runs", "retry", "done-old", db=seeded)
    assert (refused.returncode, "only failed runs" in refused.stderr) == (6, True)
    assert invoke("runs", "retry", "nope", db=seeded).returncode == 5

    dry = as_json(invoke("runs", "prune", "--older-than", "30d", "--dry-run", "--json", db=seeded))
    assert dry["count"] == 1
    assert "done-old" in asyncio.run(rows(seeded))
    pruned = cli("runs", "prune", "--older-than", "1d", "-s", "completed", db=seeded)
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 runs" in pruned.stdout
    after = asyncio.run(rows(seeded))
    assert set(after) == {"live", "failed-new", "done-0", "done-1", "done-2", "done-3"}
    assert after["live"].status == "cancelled"
    assert invoke("runs", "prune", "--older-than", "1d", "-s", "running", db=seeded).returncode == 2
    assert invoke("runs", "prune", "--older-than", "soon", db=seeded).returncode == 2


# -- errors and migrations -----------------------------------------------------------


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


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "llama-workflows-asgi"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "runs" in result.stdout


# -- serve -------------------------------------------------------------------------------


def test_serve_targets() -> None:
    assert build_app(load_target("tests.support.cli_app:server"), None).routes
    assert build_app(load_target("tests.support.cli_app:app"), None).routes
    for target in ["tests.support.cli_app", "no_such_module:x", "tests.support.cli_app:nope"]:
        with pytest.raises(UsageError):
            load_target(target)
    with pytest.raises(UsageError, match="cannot serve a int"):
        build_app(load_target("tests.support.cli_app:not_servable"), None)
    result = invoke("serve", "tests.support.cli_app:not_servable")
    assert (result.returncode, "cannot serve" in result.stderr) == (2, True)


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """``serve tests.support.cli_app:workflows`` on PostgreSQL, in its own process.

    (One database is enough here: what is tested is how a server process
    picks up what the command line wrote, the same on both.)
    """
    db, port = postgres_url, free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "llama_workflows_asgi", "serve"]
    command += ["tests.support.cli_app:workflows", "--db", db, "--port", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url, tmp_path / "serve.log")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the served app did not become healthy:\n{log.read_text()}")


def test_cancel_and_retry_runs_live_in_a_server(served: str, postgres_url: str) -> None:
    db = postgres_url
    with httpx.Client(base_url=served, timeout=30) as http:
        slow = http.post("/workflows/slow/run-nowait", json={"start_event": {"seconds": 60}})
        slow_id = slow.json()["handler_id"]
        assert cli("runs", "cancel", slow_id, db=db).returncode == 0
        # The owner stops it: its stream ends with the cancellation.
        stream = http.get(f"/events/{slow_id}", params={"sse": "false", "after_sequence": "-1"})
        assert json.loads(stream.text.splitlines()[-1])["type"] == "WorkflowCancelledEvent"
        assert http.get(f"/handlers/{slow_id}").json()["status"] == "cancelled"

        failed = http.post("/workflows/five/run", json={}).json()
        assert failed["status"] == "failed"
        assert cli("runs", "retry", failed["handler_id"], db=db).returncode == 0
        # The server claims the reopened run at its next ownership round.
        stream = http.get(
            f"/events/{failed['handler_id']}", params={"sse": "false", "after_sequence": "-1"}
        )
        events = [json.loads(line) for line in stream.text.splitlines()]
        steps = [e["value"]["step"] for e in events if e["type"] == "Note"]
        assert steps == ["s1", "s2", "s3", "s3", "s4", "s5"]
        assert events[-1]["type"] == "StopEvent"
        assert http.get(f"/handlers/{failed['handler_id']}").json()["status"] == "completed"

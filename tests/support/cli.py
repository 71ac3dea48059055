"""Running the ``llama-workflows-asgi`` command line in tests, and a database to run it on.

``cli`` runs it for real in a subprocess, as a user or a script would;
``invoke`` calls the same Typer application in-process, which is the same code
without the interpreter start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

from typer.testing import CliRunner

from llama_workflows_asgi.cli._app import app
from llama_workflows_asgi.store import (
    HandlerQuery,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
    Status,
)
from llama_workflows_asgi.store.base import utcnow
from llama_workflows_asgi.store.migrate import URL_ENV_VAR
from tests.support.factories import event, progress
from tests.support.processes import ROOT

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


def listed(result: subprocess.CompletedProcess[str] | Invoked) -> list[str]:
    return [h["handler_id"] for h in as_json(result)["handlers"]]


SEED: list[tuple[str, str, Status, float]] = [
    # handler id, workflow, status, hours ago (started and, when finished, ended)
    ("done-old", "greet", "completed", 40 * 24),
    ("failed-new", "five", "failed", 1),
    ("live", "slow", "running", 0),
    *((f"done-{i}", "greet", "completed", 2 + i) for i in range(4)),
]


async def seed(db: str) -> None:
    """Write the handlers of ``SEED`` into ``db`` (migrating it), each with three events."""
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
    """The handlers in ``db``, by id, read straight from the store."""
    store = SqlAlchemyWorkflowStore(db)
    try:
        return {h.handler_id: h for h in await store.query(HandlerQuery(load_ctx=False))}
    finally:
        await store.close()

"""The seed document's example programs (``examples/server/``), run as written.

Each server is a real process started from a temporary directory (its SQLite
file lands there) and serves on ``localhost:8000``, as the programs say; the
tests fail if that port is taken. The "Try it" scenario stops the server with
Ctrl+C (SIGINT) mid-run and starts it again.
"""

from __future__ import annotations

import asyncio
import re
import select
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from llama_agents.client import WorkflowClient
from workflows.events import StartEvent

from tests.support.example_programs import (
    ROOT,
    SEED_URL,
    ExampleServer,
    run_example_client,
    start_example_client,
)

pytestmark = pytest.mark.timeout(90)

DURABLE_SERVER = "durable_workflow_server.py"
SIX_ITEMS = ["one", "two", "three", "four", "five", "six"]


@contextmanager
def running(server: ExampleServer) -> Iterator[ExampleServer]:
    """Start ``server``; kill it at the end if it still runs, whatever happened."""
    try:
        yield server.start()
    finally:
        server.stop()


def stored_handler(database: Path, handler_id: str) -> dict[str, Any]:
    """The handler row as the SQLite file holds it, read behind the server's back."""
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT status, owner_id, error FROM workflow_handlers WHERE handler_id = ?",
            (handler_id,),
        ).fetchone()
    assert row is not None, f"no row for {handler_id} in {database}"
    return dict(row)


async def progress_events(
    client: WorkflowClient, handler_id: str, *, stop_after: int | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    """``(sequence, type, value)`` of the run's events from the start, until the
    stream ends (or ``stop_after`` ProgressEvents were seen; the stream is then closed)."""
    stream = client.get_workflow_events(handler_id)
    seen: list[tuple[int, str, dict[str, Any]]] = []
    try:
        async for event in stream:
            assert isinstance(stream.last_sequence, int)
            seen.append((stream.last_sequence, event.type, event.value))
            progressed = sum(kind == "ProgressEvent" for _, kind, _ in seen)
            if progressed == stop_after:
                break
    finally:
        await stream.aclose()
    return seen


def test_durable_client_example_prints_the_run(tmp_path: Path) -> None:
    root_database_existed = (ROOT / "durable_handlers.db").exists()
    with running(ExampleServer(DURABLE_SERVER, tmp_path)) as server:
        output = run_example_client("durable_workflow_client.py", tmp_path)
        server.interrupt()

    lines = output.splitlines()
    handler_line = re.fullmatch(r"handler_id: ([A-Za-z0-9]{10})", lines[0])
    assert handler_line is not None, output
    processed = [f"processed:{item}" for item in ["alpha", "beta", "gamma", "delta"]]
    assert lines[1:] == [
        *(
            f"  [ProgressEvent] {{'item': '{item}', 'index': {i}, 'total': 4}}"
            for i, item in enumerate(processed, start=1)
        ),
        f"  [ProcessOutput] {{'processed': {processed!r}}}",
        "Status: completed",
        f"Result: value={{'processed': {processed!r}}} qualified_name='__main__.ProcessOutput' "
        "type='ProcessOutput' types=['StopEvent']",
    ], output

    # The database landed where the server was started, nowhere else.
    database = tmp_path / "durable_handlers.db"
    assert database.exists()
    assert (ROOT / "durable_handlers.db").exists() == root_database_existed
    row = stored_handler(database, handler_line.group(1))
    assert row == {"status": "completed", "owner_id": None, "error": None}


async def test_ctrl_c_mid_run_then_restart_finishes_only_the_remaining_items(
    tmp_path: Path,
) -> None:
    client = WorkflowClient(base_url=SEED_URL)
    database = tmp_path / "durable_handlers.db"
    first = ExampleServer(DURABLE_SERVER, tmp_path, "first")
    with running(first):
        handler = await client.run_workflow_nowait(
            "processing", start_event=StartEvent(items=SIX_ITEMS)
        )
        before = await asyncio.wait_for(
            progress_events(client, handler.handler_id, stop_after=2), 15
        )
        # Ctrl+C while the third item is being worked on.
        stopped_in = await asyncio.to_thread(first.interrupt)
    assert "Application shutdown complete" in first.log()
    assert stopped_in < 10, f"Ctrl+C took {stopped_in:.1f}s"
    # Graceful stop: the run is released for the next start, not failed.
    assert stored_handler(database, handler.handler_id) == {
        "status": "running",
        "owner_id": None,
        "error": None,
    }

    with running(ExampleServer(DURABLE_SERVER, tmp_path, "second")) as second:
        after = await asyncio.wait_for(progress_events(client, handler.handler_id), 20)
        final = await client.get_handler(handler.handler_id)
        second.interrupt()

    expected = [f"processed:{item}" for item in SIX_ITEMS]
    progress = [(seq, value) for seq, kind, value in after if kind == "ProgressEvent"]
    # Each item is reported once, in order: the items done before Ctrl+C were
    # skipped after the restart, not processed again.
    assert [value["item"] for _, value in progress] == expected
    assert [value["index"] for _, value in progress] == [1, 2, 3, 4, 5, 6]
    assert {value["total"] for _, value in progress} == {6}
    # The history from before the stop is kept, under the same sequence numbers.
    assert [(seq, value) for seq, kind, value in before if kind == "ProgressEvent"] == progress[:2]
    sequences = [seq for seq, _, _ in after]
    assert sequences == sorted(set(sequences))

    assert after[-1][1:] == ("ProcessOutput", {"processed": expected})
    assert final.status == "completed"
    assert final.result is not None
    assert final.result.value == {"processed": expected}


UNCLEAN = ("Traceback", "Task was destroyed", "graceful shutdown exceeded", "could not write")


def read_line(client: subprocess.Popen[str], timeout: float) -> str:
    """The client's next line of output (fails if none comes within ``timeout``)."""
    assert client.stdout is not None
    ready, _, _ = select.select([client.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"the client printed nothing for {timeout}s")
    return client.stdout.readline().rstrip("\n")


def test_readme_story_ctrl_c_mid_run_then_restart_and_the_client_follows_it(
    tmp_path: Path,
) -> None:
    first = ExampleServer(DURABLE_SERVER, tmp_path, "first")
    second = ExampleServer(DURABLE_SERVER, tmp_path, "second")
    with running(first):
        client = start_example_client("durable_workflow_client.py", tmp_path)
        try:
            output = [read_line(client, 20) for _ in range(3)]  # the id, two items
            # Ctrl+C while the third item is being worked on, the stream open.
            stopped_in = first.interrupt()
            output.append(read_line(client, 10))
            with running(second):
                rest, _ = client.communicate(timeout=30)
                second.interrupt()
        finally:
            client.kill()
    output += rest.splitlines()

    assert stopped_in < 5.0 + 1.0, f"Ctrl+C took {stopped_in:.2f}s (stop_timeout is 5 s)"
    for server in (first, second):
        log = server.log()
        assert "Application shutdown complete" in log, log
        assert not [bad for bad in UNCLEAN if bad in log], log
    assert client.returncode == 0, "\n".join(output)
    processed = [f"processed:{item}" for item in ["alpha", "beta", "gamma", "delta"]]
    assert re.fullmatch(r"handler_id: [A-Za-z0-9]{10}", output[0]), output
    # Every item once, in order, the restart in between; nothing failed.
    assert output[1:] == [
        *(
            f"  [ProgressEvent] {{'item': '{item}', 'index': {i}, 'total': 4}}"
            for i, item in enumerate(processed[:2], start=1)
        ),
        "  ... server unavailable, reconnecting",
        *(
            f"  [ProgressEvent] {{'item': '{item}', 'index': {i}, 'total': 4}}"
            for i, item in enumerate(processed[2:], start=3)
        ),
        f"  [ProcessOutput] {{'processed': {processed!r}}}",
        "Status: completed",
        f"Result: value={{'processed': {processed!r}}} qualified_name='__main__.ProcessOutput' "
        "type='ProcessOutput' types=['StopEvent']",
    ], "\n".join(output)
    print(f"Ctrl+C to exit: {stopped_in:.2f}s")


async def test_quick_start_greeting_server(tmp_path: Path) -> None:
    client = WorkflowClient(base_url=SEED_URL)
    with running(ExampleServer("greeting_server.py", tmp_path, "greet-1")) as server:
        assert (await client.is_healthy()).status == "healthy"
        assert (await client.list_workflows()).workflows == ["greet"]
        named = await client.run_workflow("greet", start_event=StartEvent(name="Ada"))
        default = await client.run_workflow("greet")
        server.interrupt()

    for handler, greeting in [(named, "Hello, Ada!"), (default, "Hello, World!")]:
        assert handler.status == "completed"
        assert handler.result is not None
        assert handler.result.value == {"result": greeting}
    assert (tmp_path / "handlers.db").exists()

    # "Completed workflow results survive server restarts."
    with running(ExampleServer("greeting_server.py", tmp_path, "greet-2")) as server:
        again = await client.get_handler(named.handler_id)
        server.interrupt()
    assert again.status == "completed"
    assert again.result is not None
    assert again.result.value == {"result": "Hello, Ada!"}

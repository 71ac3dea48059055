"""Real uvicorn processes killed with SIGKILL and started again on the same database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from llama_agents.client import WorkflowClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from llama_workflows_asgi.store.schema import handlers_table
from tests.support.crash_app import ProcessInput
from tests.support.http import wait_until_event
from tests.support.processes import JournalLine, ServerProcess, read_journal, server_processes
from tests.support.rows import sql_reader
from tests.support.waiting import eventually, not_live_in
from tests.support.workflows import AnswerEvent

pytestmark = pytest.mark.timeout(180)

ITEMS = ["a1", "a2", "a3", "a4", "a5"]


@pytest.fixture(params=["sqlite", "postgres"])
def crash_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.tsv"


@pytest.fixture
def make_server(crash_db: str, journal_path: Path, tmp_path: Path) -> Callable[..., ServerProcess]:
    def make(name: str, **env: str) -> ServerProcess:
        base = {"WF_DATABASE_URL": crash_db, "WF_JOURNAL": str(journal_path)}
        return ServerProcess(name, {**base, **env}, tmp_path)

    return make


@dataclass
class Restart:
    """Two servers on one database; the first is running and ``client`` talks to it."""

    first: ServerProcess
    second: ServerProcess
    client: WorkflowClient


@pytest.fixture
async def restart(make_server: Callable[..., ServerProcess]) -> AsyncIterator[Restart]:
    first, second = make_server("first"), make_server("second")
    with server_processes(first, second):
        await asyncio.to_thread(first.start)
        yield Restart(first, second, WorkflowClient(base_url=first.url))


async def checkpointed(engine: AsyncEngine, handler_id: str, text: str) -> bool:
    """Whether the run's checkpoint in the database holds ``text``."""
    query = select(handlers_table.c.ctx).where(handlers_table.c.handler_id == handler_id)
    async with engine.connect() as conn:
        ctx = (await conn.execute(query)).scalar()
    return ctx is not None and text in ctx


def actions(journal: list[JournalLine], action: str) -> list[JournalLine]:
    return [line for line in journal if line.action == action]


async def collect_until_failure(
    client: WorkflowClient, handler_id: str, after: int
) -> tuple[list, object]:
    """Stream events until the stream ends or the server goes away."""
    stream = client.get_workflow_events(handler_id, after_sequence=after, max_reconnect_attempts=1)
    seen: list[tuple[object, str, dict]] = []
    try:
        async for event in stream:
            seen.append((stream.last_sequence, event.type, event.value))
    except ConnectionError:
        pass
    return seen, stream.last_sequence


async def test_sigkill_mid_item_resumes_only_remaining_items(
    restart: Restart, journal_path: Path, crash_db: str
) -> None:
    first, second, client = restart.first, restart.second, restart.client
    start = ProcessInput(name="p", items=ITEMS, delay=0.4)
    handler = await client.run_workflow_nowait("processing", start_event=start)
    before = asyncio.create_task(collect_until_failure(client, handler.handler_id, -1))

    # Kill in the middle of the third item: two are done (written), one is in flight.
    begun = lambda: len(actions(read_journal(journal_path), "begin")) == 3  # noqa: E731
    await eventually(begun, "item 3 begun", timeout=15)
    async with sql_reader(crash_db) as engine:
        written = partial(checkpointed, engine, handler.handler_id, "processed:a2")
        await eventually(written, "item 2 checkpointed", timeout=15)
    killed_at = first.kill()
    seen_before, cursor = await asyncio.wait_for(before, 10)

    second.port = first.port  # the client reconnects to the same address
    await asyncio.to_thread(second.start)
    seen_after, _ = await collect_until_failure(client, handler.handler_id, int(cursor))  # type: ignore[call-overload]
    final = await client.get_handler(handler.handler_id)

    journal = read_journal(journal_path)
    begins = [(line.process, line.detail) for line in actions(journal, "begin")]
    assert begins == [
        ("first", "a1"),
        ("first", "a2"),
        ("first", "a3"),
        ("second", "a3"),
        ("second", "a4"),
        ("second", "a5"),
    ]
    resumed = next(line for line in journal if line.process == "second")
    assert resumed.at > killed_at
    assert resumed.at - second.ready_at < 1.0, "the run must resume within a second of startup"

    # Every event exactly once, in order, across the crash.
    events = seen_before + seen_after
    sequences = [sequence for sequence, _, _ in events]
    assert sequences == sorted(set(sequences))
    progress = [value["item"] for _, kind, value in events if kind == "ProgressEvent"]
    assert progress == [f"processed:{item}" for item in ITEMS]
    assert events[-1][1] == "ProcessOutput"
    assert final.status == "completed"
    assert final.result is not None
    assert final.result.value["processed"] == [f"processed:{item}" for item in ITEMS]


async def test_history_survives_restarts_and_late_subscribers_get_all_of_it(
    restart: Restart,
) -> None:
    first, second, client = restart.first, restart.second, restart.client
    start = ProcessInput(name="h", items=["x", "y"], delay=0.01)
    done = await client.run_workflow("processing", start_event=start)
    original = [(e.type, e.value) async for e in client.get_workflow_events(done.handler_id)]
    first.kill()

    await asyncio.to_thread(second.start)
    later = WorkflowClient(base_url=second.url)
    restored = await later.get_handler(done.handler_id)
    replay = [(e.type, e.value) async for e in later.get_workflow_events(done.handler_id)]
    listed = await later.get_handlers(status=["completed"])

    assert restored.model_dump() == done.model_dump()
    assert replay == original
    assert [kind for kind, _ in replay] == ["ProgressEvent", "ProgressEvent", "ProcessOutput"]
    assert [h.handler_id for h in listed.handlers] == [done.handler_id]


async def test_last_event_id_after_restart(restart: Restart, journal_path: Path) -> None:
    first, second, client = restart.first, restart.second, restart.client
    start = ProcessInput(name="l", items=["l1", "l2", "l3"], delay=0.5)
    handler = await client.run_workflow_nowait("processing", start_event=start)
    ended = lambda: len(actions(read_journal(journal_path), "end")) >= 1  # noqa: E731
    await eventually(ended, "item 1 done", timeout=15)
    async with httpx.AsyncClient(base_url=first.url) as http:
        await wait_until_event(http, handler.handler_id, "ProgressEvent")  # the first is written
        head = await http.get(
            f"/events/{handler.handler_id}", params={"after_sequence": "now"}, timeout=2
        )
    first.kill()
    await asyncio.to_thread(second.start)
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
        body = (
            await http.get(f"/events/{handler.handler_id}", headers={"Last-Event-ID": "-1"})
        ).text
    frames = [frame for frame in body.split("\n\n") if frame]
    assert head.status_code in (200, 204)
    ids = [int(frame.split("\n")[0].removeprefix("id: ")) for frame in frames]
    assert ids == sorted(set(ids))
    assert frames[-1].split("\n")[1].startswith('data: {"value":{"processed"')


async def test_waiting_run_survives_restart_and_continues_with_an_event(
    restart: Restart,
) -> None:
    first, second, client = restart.first, restart.second, restart.client
    handler = await client.run_workflow_nowait("hitl")
    async for event in client.get_workflow_events(handler.handler_id):
        if event.type == "AskEvent":
            break
    first.kill()
    await asyncio.to_thread(second.start)
    later = WorkflowClient(base_url=second.url)
    await later.send_event(handler.handler_id, AnswerEvent(answer="after restart"))
    done = await later.wait_for_handler(handler.handler_id, poll_interval=0.1, timeout=20)
    assert done.result is not None
    assert done.result.value == {"result": "got after restart"}


async def test_idle_released_run_continues_with_an_event(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server("only", WF_IDLE_TIMEOUT="0.5")
    with server_processes(server):
        await asyncio.to_thread(server.start)
        client = WorkflowClient(base_url=server.url)
        handler = await client.run_workflow_nowait("hitl")
        async for event in client.get_workflow_events(handler.handler_id):
            if event.type == "AskEvent":
                break
        # Idle (waiting for input) for longer than the idle timeout: released from memory.
        await eventually(lambda: not_live_in(server.url, handler.handler_id), "the idle release")
        await client.send_event(handler.handler_id, AnswerEvent(answer="woke"))
        done = await client.wait_for_handler(handler.handler_id, poll_interval=0.1, timeout=20)
        log = server.log()
    assert done.result is not None
    assert done.result.value == {"result": "got woke"}
    assert "Traceback" not in log


async def test_event_acknowledged_just_before_a_crash_is_not_lost(
    make_server: Callable[..., ServerProcess],
) -> None:
    first = make_server("first", WF_ANSWER_DELAY="2")
    second = make_server("second")
    with server_processes(first, second):
        await asyncio.to_thread(first.start)
        client = WorkflowClient(base_url=first.url)
        handler = await client.run_workflow_nowait("hitl")
        async for event in client.get_workflow_events(handler.handler_id):
            if event.type == "AskEvent":
                break
        await client.send_event(handler.handler_id, AnswerEvent(answer="kept"))
        first.kill()  # right after the 200
        await asyncio.to_thread(second.start)
        later = WorkflowClient(base_url=second.url)
        done = await later.wait_for_handler(handler.handler_id, poll_interval=0.1, timeout=20)
    assert done.result is not None
    assert done.result.value == {"result": "got kept"}


async def test_cancel_a_run_resumed_after_a_crash(restart: Restart, journal_path: Path) -> None:
    first, second, client = restart.first, restart.second, restart.client
    start = ProcessInput(name="c", items=[f"c{i}" for i in range(20)], delay=0.3)
    handler = await client.run_workflow_nowait("processing", start_event=start)
    begun = lambda: len(actions(read_journal(journal_path), "begin")) >= 2  # noqa: E731
    await eventually(begun, "work", timeout=15)
    first.kill()
    await asyncio.to_thread(second.start)
    later = WorkflowClient(base_url=second.url)
    resumed = lambda: any(line.process == "second" for line in read_journal(journal_path))  # noqa: E731
    await eventually(resumed, "resume", timeout=5)
    assert (await later.cancel_handler(handler.handler_id)).status == "cancelled"
    stopped_at = time.time()
    await eventually(lambda: not_live_in(second.url, handler.handler_id), "the run stopped")
    events = [e.type async for e in later.get_workflow_events(handler.handler_id)]
    with pytest.raises(httpx.HTTPStatusError) as cancelled:
        await later.get_handler(handler.handler_id)
    assert cancelled.value.response.json()["status"] == "cancelled"
    assert events[-1] == "WorkflowCancelledEvent"
    late = [
        line
        for line in read_journal(journal_path)
        if line.action == "begin" and line.at > stopped_at
    ]
    assert late == []

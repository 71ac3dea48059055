"""Unresumable runs fail alone with a clear error; runs of a workflow not served wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
from llama_agents.client import WorkflowClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.crash_app import TickerInput
from tests.support.processes import ServerProcess, server_processes
from tests.support.waiting import (
    eventually,
    handler_status,
    ownership_rounds,
    progress_written,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=["sqlite", "postgres"])
def crash_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    return str(request.getfixturevalue("postgres_url"))


# Ownership rounds five times a second: tests wait for rounds to have run.
FAST_ROUNDS = "0.2"


@pytest.fixture
def make_server(crash_db: str, tmp_path: Path) -> Callable[..., ServerProcess]:
    counter = iter(range(100))

    def make(**env: str) -> ServerProcess:
        return ServerProcess(f"p{next(counter)}", {"WF_DATABASE_URL": crash_db, **env}, tmp_path)

    return make


async def failed_handler(url: str, handler_id: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get(f"/handlers/{handler_id}")
    assert response.status_code == 500
    body: dict[str, object] = response.json()
    assert body["status"] == "failed"
    return body


async def is_failed(url: str, handler_id: str) -> bool:
    return await handler_status(url, handler_id) == "failed"


def exited(server: ServerProcess) -> bool:
    return server.process is not None and server.process.poll() is not None


async def crashed_or_gave_up(server: ServerProcess) -> bool:
    """Whether the server died resuming ``boom``, or lives with ``boom`` failed."""
    if exited(server):
        return True
    try:
        return await is_failed(server.url, "boom")
    except httpx.TransportError:
        return False  # dying: the next look sees it exited


async def interrupted_ticker(make_server: Callable[..., ServerProcess]) -> str:
    first = make_server()
    with server_processes(first):
        await asyncio.to_thread(first.start)
        client = WorkflowClient(base_url=first.url)
        start = TickerInput(name="t", steps=100, delay=0.1)
        handler = await client.run_workflow_nowait("ticker", start_event=start)
        await eventually(lambda: progress_written(first.url, handler.handler_id), "a checkpoint")
        first.kill()
    return handler.handler_id


async def test_run_of_an_unregistered_workflow_waits_unowned_for_a_server_of_it(
    make_server: Callable[..., ServerProcess], crash_db: str
) -> None:
    """Not failed: during a rolling deploy the server serving it may be back in a moment."""
    handler_id = await interrupted_ticker(make_server)
    second = make_server(WF_SKIP_WORKFLOWS="ticker", WF_POLL_INTERVAL=FAST_ROUNDS)
    with server_processes(second):
        await asyncio.to_thread(second.start)
        assert second.process is not None
        # Its ownership rounds see the run, free to claim, and leave it.
        await ownership_rounds(crash_db, 2, pid=second.process.pid)
        async with httpx.AsyncClient(base_url=second.url) as http:
            waiting = await http.get(f"/handlers/{handler_id}")
            listed = await http.get("/handlers", params={"status": "running"})
            cancelled = await http.post(f"/handlers/{handler_id}/cancel")  # how to retire it
    assert waiting.status_code == 202
    assert waiting.json()["status"] == "running"
    assert [h["handler_id"] for h in listed.json()["handlers"]] == [handler_id]
    assert cancelled.json() == {"status": "cancelled"}


async def test_unreadable_checkpoint_fails_the_run_not_the_server(
    make_server: Callable[..., ServerProcess], crash_db: str
) -> None:
    handler_id = await interrupted_ticker(make_server)
    engine = create_async_engine(crash_db)
    async with engine.begin() as conn:
        corrupt = text("UPDATE workflow_handlers SET ctx = :ctx WHERE handler_id = :id")
        await conn.execute(
            corrupt, {"ctx": '{"version": 2, "is_running": true, "workers": 7}', "id": handler_id}
        )
    await engine.dispose()

    second = make_server()
    with server_processes(second):
        await asyncio.to_thread(second.start)
        await eventually(lambda: is_failed(second.url, handler_id), "the resume gives up")
        body = await failed_handler(second.url, handler_id)
        async with httpx.AsyncClient(base_url=second.url) as http:
            healthy = (await http.get("/health")).json()
    assert str(body["error"]).startswith("Cannot resume: ")
    assert healthy == {"status": "healthy"}


async def test_run_that_keeps_crashing_its_process_is_given_up(
    make_server: Callable[..., ServerProcess],
) -> None:
    first = make_server()
    crashes = 0
    with server_processes(first):
        await asyncio.to_thread(first.start)
        async with httpx.AsyncClient(base_url=first.url) as http:
            try:
                created = await http.post(
                    "/workflows/crashing/run-nowait", json={"handler_id": "boom"}
                )
                assert created.status_code == 200
            except httpx.TransportError:
                pass  # the process may die before answering; the row is written first
        await asyncio.to_thread(first.wait_exit, 10)
        crashes += 1

    survivor = None
    for _ in range(8):
        server = make_server()
        try:
            await asyncio.to_thread(server.start)
            settled = partial(crashed_or_gave_up, server)
            await eventually(settled, "a crash, or the run given up", timeout=30)
            if not exited(server):
                survivor = server
                break
        except RuntimeError:
            pass  # resumed the crashing step during startup and died
        server.stop()
        crashes += 1

    assert survivor is not None, "the server must eventually start despite the crashing run"
    with server_processes(survivor):
        body = await failed_handler(survivor.url, "boom")
    assert crashes == 4  # the first run and three resumes
    assert "Gave up resuming after 3 attempts" in str(body["error"])

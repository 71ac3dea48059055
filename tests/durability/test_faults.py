"""Database faults: a PostgreSQL restart, a locked SQLite file, a full one; what /health says."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_agents.client import WorkflowClient
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi import ServiceConfig, SqlAlchemyWorkflowStore, WorkflowServer
from tests.support.crash_app import TickerInput
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess, read_journal, server_processes
from tests.support.servers import serving
from tests.support.waiting import eventually, progress_written
from tests.support.workflows import make_workflows

pytestmark = pytest.mark.timeout(180)


async def health_once(http: httpx.AsyncClient, status: int, timeout: float = 15) -> Any:
    """Poll ``/health`` until it answers ``status``; return that body."""
    last: list[httpx.Response] = []

    async def answered() -> bool:
        last[:] = [await http.get("/health")]
        return last[0].status_code == status

    await eventually(answered, f"/health answering {status}", timeout)
    return last[0].json()


class BeatWorkflow(Workflow):
    """Streams a beat every 50 ms for ``seconds``: it always has progress to write."""

    @step
    async def beat(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(int(float(ev.get("seconds", 10)) / 0.05)):
            ctx.write_event_to_stream(Event(i=i))
            await asyncio.sleep(0.05)
        return StopEvent(result="done")


@asynccontextmanager
async def locked(path: Path) -> AsyncIterator[None]:
    """Hold the SQLite file's write lock (taken off the event loop, once the writer lets go)."""
    blocker = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def locked_sqlite_server(path: Path) -> WorkflowServer:
    config = ServiceConfig(lease_ttl=2.0, poll_interval=0.2, max_unwritten_age=0.5)
    store = SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{path}", busy_timeout=0.2)
    server = WorkflowServer(store, config=config)
    server.add_workflow("beat", BeatWorkflow(timeout=None))
    return server


async def test_health_reports_a_writer_blocked_on_a_locked_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    server = locked_sqlite_server(path)
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        handler = (await http.post("/workflows/beat/run-nowait", json={})).json()
        before = await health_once(http, 200)
        async with locked(path):
            stalled = await health_once(http, 503)
        after = await health_once(http, 200)
        await http.post(f"/handlers/{handler['handler_id']}/cancel")

    assert before == after == {"status": "healthy"}
    assert stalled["status"] == "unhealthy"
    assert stalled["detail"].startswith("Progress of 1 run(s) unwritten for ")


async def test_health_reports_an_ownership_loop_that_cannot_renew(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    server = locked_sqlite_server(path)  # no run: the writer has nothing to write
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        before = await health_once(http, 200)
        async with locked(path):
            stalled = await health_once(http, 503)
        after = await health_once(http, 200)

    assert before == after == {"status": "healthy"}
    assert stalled["detail"].startswith("No ownership round completed for ")
    assert stalled["detail"].endswith(": database is locked by another process")


def outage_noticed(server: ServerProcess) -> bool:
    log = server.log()
    return "liveness connection lost" in log and "ownership round failed" in log


async def test_postgres_restart_mid_run(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.tsv"
    env = {"WF_DATABASE_URL": postgres_url, "WF_JOURNAL": str(journal)}
    server = ServerProcess("server", env, tmp_path)
    with server_processes(server):
        await asyncio.to_thread(server.start)
        client = WorkflowClient(base_url=server.url)
        accepted = [
            (
                await client.run_workflow_nowait(
                    "ticker", start_event=TickerInput(name=f"t{i}", steps=30, delay=0.1)
                )
            )
            for i in range(3)
        ]
        for handler in accepted:
            written = partial(progress_written, server.url, handler.handler_id)
            await eventually(written, "progress written")
        await asyncio.to_thread(postgres_server.stop)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                during_get = await http.get(f"/handlers/{accepted[0].handler_id}")
                during_run = await http.post(
                    "/workflows/ticker/run-nowait", json={"start_event": {"name": "x"}}
                )
                health = await http.get("/health")
            # The outage lasts until the server noticed it: its token lost, a round failed.
            await eventually(lambda: outage_noticed(server), "the outage noticed", timeout=30)
        finally:
            await asyncio.to_thread(postgres_server.start)
        done = [
            await client.wait_for_handler(h.handler_id, poll_interval=0.2, timeout=60)
            for h in accepted
        ]
        listed = await client.get_handlers()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            healthy_again = await health_once(http, 200)

    for response in (during_get, during_run):
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert isinstance(response.json()["detail"], str)
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["detail"].startswith("The store is unreachable: cannot reach the database")
    assert healthy_again == {"status": "healthy"}
    assert [h.result.value["result"]["ticks"] for h in done if h.result] == [30, 30, 30]
    # The refused request left nothing behind; the accepted ones all finished.
    assert sorted(h.handler_id for h in listed.handlers) == sorted(h.handler_id for h in accepted)
    steps = [line for line in read_journal(journal) if line.action == "start"]
    per_run = {
        f"t{i}": sorted(int(line.detail) for line in steps if line.run == f"t{i}") for i in range(3)
    }
    assert all(sorted(set(ticks)) == list(range(30)) for ticks in per_run.values()), "step lost"
    # The database restart ended the process's liveness session, so it stopped
    # its runs (another replica could have adopted them): the steps in flight
    # then ran once more after it took its token back, nothing else did.
    for ticks in per_run.values():
        repeated = [tick for tick, count in Counter(ticks).items() if count > 1]
        assert len(repeated) <= 1, f"more than the step in flight ran twice: {repeated}"
        assert max(Counter(ticks).values()) <= 2


async def test_locked_sqlite_file_gives_a_clear_503(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    server = WorkflowServer(
        SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{path}", busy_timeout=0.3)
    )
    for name, workflow in make_workflows().items():
        server.add_workflow(name, workflow)
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        before = await http.post("/workflows/greet/run", json={})
        # The server may be mid-write (a heartbeat): the blocker waits its turn for the lock.
        blocker = sqlite3.connect(path, isolation_level=None, timeout=10)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            refused = await http.post("/workflows/greet/run-nowait", json={})
            readable = await http.get(f"/handlers/{before.json()['handler_id']}")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        after = await http.post("/workflows/greet/run", json={})
        listed = (await http.get("/handlers")).json()["handlers"]

    assert before.status_code == 200
    assert refused.status_code == 503
    assert "locked" in refused.json()["detail"]
    assert refused.headers["Retry-After"].isdigit()
    assert readable.status_code == 200  # WAL readers are not blocked by a writer
    assert after.status_code == 200
    assert len(listed) == 2


def fill_to_the_last_page(path: Path, pages: int) -> None:
    """Grow the SQLite file to ``pages`` pages with nothing free in them.

    Done from outside the server, so how full the file is never depends on how
    the server batched its writes: once this returns, any write that needs a
    new page (every 50 kB start event does) is refused by the server, whose
    connection may not grow the file past ``pages`` or its current size.
    """
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute("CREATE TABLE filler (b BLOB NOT NULL)")

        def room() -> bool:
            size, free = (
                db.execute(f"PRAGMA {n}").fetchone()[0] for n in ("page_count", "freelist_count")
            )
            return bool(size < pages or free)

        while room():  # a new row takes a free page first, then grows the file
            db.execute("INSERT INTO filler VALUES (zeroblob(?))", (page_size,))
        db.commit()


def free_the_filler(path: Path) -> None:
    """Give the filler's pages back to the file's free list: space is back."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        db.execute("DROP TABLE filler")
        db.commit()


async def test_full_sqlite_file_gives_a_clear_503_and_keeps_serving(tmp_path: Path) -> None:
    database = tmp_path / "full.db"
    env = {"WF_DATABASE_URL": f"sqlite+aiosqlite:///{database}", "WF_SQLITE_MAX_PAGES": "150"}
    server = ServerProcess("server", env, tmp_path)
    body = {"start_event": {"name": "x" * 50_000, "items": []}}
    with server_processes(server):
        await asyncio.to_thread(server.start)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            # /run answers once the run is finished: nothing of it is left to write.
            fitted = await http.post("/workflows/processing/run", json=body)
            await asyncio.to_thread(fill_to_the_last_page, database, 150)
            refused = await http.post("/workflows/processing/run-nowait", json=body)
            waited = await http.post("/workflows/processing/run", json=body)
            health = await http.get("/health")
            listing = await http.get("/handlers", params={"limit": 5})
            await asyncio.to_thread(free_the_filler, database)
            after = await http.post("/workflows/processing/run", json=body)

    assert fitted.status_code == 200, "a run fits before the file fills up"
    for answer in (refused, waited):  # never a hang, never a 500
        assert answer.status_code == 503, answer.text
        assert "full" in answer.json()["detail"]
    assert health.status_code == 200
    assert listing.status_code == 200
    assert [h["handler_id"] for h in listing.json()["handlers"]] == [fitted.json()["handler_id"]]
    assert after.status_code == 200, after.text
    assert after.json()["status"] == "completed"

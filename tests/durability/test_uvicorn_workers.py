"""``uvicorn --workers 2`` on one SQLite file: each worker is an owner of its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.durability.test_multi_process import assert_never_concurrent, intervals
from tests.support.processes import ServerProcess, read_journal, server_processes

pytestmark = pytest.mark.timeout(180)

RUNS, STEPS = 6, 50


@asynccontextmanager
async def one_client_per_worker(
    url: str, workers: int
) -> AsyncIterator[dict[int, httpx.AsyncClient]]:
    """A client held on one connection to each worker, keyed by the worker's pid."""
    async with AsyncExitStack() as stack:
        clients: dict[int, httpx.AsyncClient] = {}
        deadline = time.monotonic() + 30
        while len(clients) < workers and time.monotonic() < deadline:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            client = httpx.AsyncClient(base_url=url, limits=limits, timeout=30)
            stack.push_async_callback(client.aclose)
            pid = (await client.get("/test/pid")).json()["pid"]
            clients.setdefault(pid, client)
        assert len(clients) == workers, "the kernel never handed a connection to every worker"
        yield clients


def owners(db: Path) -> dict[str, int | None]:
    """Handler id -> the pid in its owner id (``host:pid:token``), read from the file."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT handler_id, owner_id FROM workflow_handlers").fetchall()
    return {hid: None if owner is None else int(owner.split(":")[1]) for hid, owner in rows}


def terminal_events(db: Path) -> Counter[str]:
    """How many terminal events each run's log holds, by handler id."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT h.handler_id FROM workflow_events e JOIN workflow_handlers h"
            " ON h.run_id = e.run_id WHERE e.terminal"
        ).fetchall()
    return Counter(hid for (hid,) in rows)


async def stream_types(
    client: httpx.AsyncClient, handler_id: str, *, first_only: bool = False
) -> list[str]:
    """Event types streamed for a run: all of them, or just the first one."""
    types: list[str] = []
    # The ticker streams nothing but its result: the first event is an internal one.
    params = {"sse": "false", "after_sequence": "-1", "include_internal": str(first_only).lower()}
    async with client.stream("GET", f"/events/{handler_id}", params=params) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                types.append(json.loads(line)["type"])
                if first_only:
                    break
    return types


async def stream_anywhere(url: str, handler_id: str) -> list[str]:
    """The whole stream of a run, on a fresh connection to whichever worker takes it."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await stream_types(client, handler_id)


async def test_two_workers_on_one_sqlite_file(tmp_path: Path) -> None:
    db, journal_path = tmp_path / "handlers.db", tmp_path / "journal.tsv"
    env = {"WF_DATABASE_URL": f"sqlite+aiosqlite:///{db}", "WF_JOURNAL": str(journal_path)}
    server = ServerProcess("W", env, tmp_path, workers=2)
    with server_processes(server):
        await asyncio.to_thread(server.start, 90.0)  # two workers import at once
        async with one_client_per_worker(server.url, 2) as clients:
            pids = sorted(clients)
            handler_ids = []
            for i in range(RUNS):  # started on both workers in turn
                body = {"start_event": {"name": f"r{i}", "steps": STEPS, "delay": 0.15}}
                started = await clients[pids[i % 2]].post("/workflows/ticker/run-nowait", json=body)
                assert started.status_code == 200, started.text
                handler_ids.append(started.json()["handler_id"])
            placed = owners(db)
            assert {placed[h] for h in handler_ids} == set(pids), "each worker owns its runs"

            # Status and streams from either worker, whichever executes the run.
            for client in clients.values():
                for handler_id in handler_ids:
                    got = await client.get(f"/handlers/{handler_id}")
                    assert got.json()["status"] == "running"
            # Each worker streams a run the other one executes (the last use
            # of its connection: a stream left early closes it).
            for pid, client in clients.items():
                remote = next(h for h in handler_ids if placed[h] != pid)
                assert await stream_types(client, remote, first_only=True)
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        # The survivor, or the worker uvicorn starts instead: any may answer.
        ends = await asyncio.gather(*(stream_anywhere(server.url, h) for h in handler_ids))
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            finals = [(await http.get(f"/handlers/{h}")).json() for h in handler_ids]

    ticks_at_kill = [
        x for x in read_journal(journal_path) if x.action == "stop" and x.at <= killed_at
    ]
    assert len(ticks_at_kill) < RUNS * STEPS, "the kill came before the runs were done"
    assert all(types[-1] == "StopEvent" for types in ends)
    assert [f["status"] for f in finals] == ["completed"] * RUNS
    assert all(f["result"]["value"]["result"]["ticks"] == STEPS for f in finals)
    assert terminal_events(db) == Counter({h: 1 for h in handler_ids}), "each run ended once"
    journal = read_journal(journal_path)
    assert_never_concurrent(intervals(journal, {f"W/{victim}": killed_at}))
    starts: dict[str, Counter[str]] = defaultdict(Counter)
    for line in journal:
        if line.action == "start":
            starts[line.run][line.detail] += 1
    finishers = {line.run: line.process for line in journal if line.action == "stop"}
    for i, handler_id in enumerate(handler_ids):
        if placed[handler_id] == victim:
            assert finishers[f"r{i}"] != f"W/{victim}", f"r{i} was finished by another worker"
        ticks = starts[f"r{i}"]
        assert set(ticks) == {str(n) for n in range(STEPS)}
        if placed[handler_id] != victim:
            assert set(ticks.values()) == {1}, f"r{i} ran a step twice without any crash"
        else:
            # At-least-once: only steps past the last written checkpoint run again.
            assert sum(ticks.values()) - STEPS <= 2

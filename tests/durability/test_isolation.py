"""Fault injection in real uvicorn processes: one faulty run fails alone.

One server process per store kind serves every case of the module. Each case
runs 20 healthy ticker runs beside one faulty request or run: the faulty one
is refused (400) or ends ``failed`` with a readable error and a stream ending
on the failure, the 20 complete, each of their steps executed exactly once
(the crash app's step journal), and the process keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import make_url

from llama_workflows_asgi.store._liveness_pg import PostgresLiveness
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess, read_journal, server_processes
from tests.support.workflows import FAULTS, nested_list

pytestmark = pytest.mark.timeout(120)

HEALTHY_RUNS = 20
STEPS = 3

# A run's faults (see FaultyWorkflow), then refused inputs.
CASES = [*FAULTS, "surrogate", "deep_start_event", "deep_sent_event"]

ERRORS = {
    "event": "The run's event Note cannot be serialized",
    "state": "The run's state cannot be checkpointed",
    "result": "The run's result cannot be serialized",
    "deep_state": "The run's state cannot be checkpointed",
    "keyboard": "A step raised KeyboardInterrupt",
    "systemexit": "A step raised SystemExit",
    "cancelled": "A step raised CancelledError",
    "surrogate": "The run's progress cannot be saved",
}


@dataclass
class Served:
    kind: str
    process: ServerProcess
    journal: Path
    database_url: str
    postgres: PostgresServer | None


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    kind = str(request.param)
    root = tmp_path_factory.mktemp(f"isolation-{kind}")
    postgres: PostgresServer | None = None
    if kind == "postgres":
        postgres = request.getfixturevalue("postgres_server")
        url = postgres.create_database()
    else:
        url = f"sqlite+aiosqlite:///{root / 'workflows.db'}"
    journal = root / "journal.tsv"
    process = ServerProcess(kind, {"WF_DATABASE_URL": url, "WF_JOURNAL": str(journal)}, root)
    with server_processes(process):
        process.start()
        yield Served(kind, process, journal, url, postgres)


async def finished(http: httpx.AsyncClient, handler_id: str, timeout: float = 60) -> Any:
    """The handler once it has finished (503s while the database is away are retried)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await http.get(f"/handlers/{handler_id}")
        if response.status_code in (200, 500):
            return response.json()
        await asyncio.sleep(0.05)
    pytest.fail(f"handler {handler_id} did not finish")


async def start_tickers(http: httpx.AsyncClient, prefix: str, steps: int = STEPS) -> list[str]:
    async def start(i: int) -> str:
        body = {"start_event": {"name": f"{prefix}-{i}", "steps": steps, "delay": 0.05}}
        response = await http.post("/workflows/ticker/run-nowait", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["handler_id"])

    return list(await asyncio.gather(*(start(i) for i in range(HEALTHY_RUNS))))


async def stream_types(http: httpx.AsyncClient, handler_id: str) -> list[str]:
    params = {"sse": "false", "after_sequence": "-1"}
    response = await http.get(f"/events/{handler_id}", params=params)
    return [httpx.Response(200, content=line).json()["type"] for line in response.iter_lines()]


async def inject(http: httpx.AsyncClient, case: str) -> str | None:
    """Start the faulty run (its handler id) or send the refused input (``None``)."""
    if case == "deep_start_event":
        body = {"start_event": {"name": "deep", "extra": nested_list(70)}}
        refused = await http.post("/workflows/ticker/run-nowait", json=body)
        assert refused.status_code == 400
        assert "limit of 64 levels" in refused.json()["detail"]
        return None
    if case == "deep_sent_event":
        handler_id = (await http.post("/workflows/hitl/run-nowait", json={})).json()["handler_id"]
        event = {"type": "AnswerEvent", "value": {"answer": "x", "extra": nested_list(70)}}
        refused = await http.post(f"/events/{handler_id}", json={"event": event})
        assert refused.status_code == 400
        assert "limit of 64 levels" in refused.json()["detail"]
        answer = {"event": {"type": "AnswerEvent", "value": {"answer": "fine"}}}
        assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
        done = await finished(http, handler_id)
        assert done["result"]["value"] == {"result": "got fine"}  # the run was untouched
        return None
    response = await http.post("/workflows/faulty/run-nowait", json={"start_event": {"mode": case}})
    assert response.status_code == 200
    return str(response.json()["handler_id"])


def assert_each_step_ran_once(served: Served, prefix: str, steps: int = STEPS) -> None:
    journal = read_journal(served.journal)
    for i in range(HEALTHY_RUNS):
        name = f"{prefix}-{i}"
        started = sorted(
            int(line.detail) for line in journal if line.run == name and line.action == "start"
        )
        assert started == list(range(steps)), f"{name} steps: {started}"


@pytest.mark.parametrize("case", CASES)
async def test_one_faulty_run_fails_alone(served: Served, case: str) -> None:
    prefix = f"{served.kind}-{case}"
    async with httpx.AsyncClient(base_url=served.process.url, timeout=30) as http:
        faulty, healthy = await asyncio.gather(inject(http, case), start_tickers(http, prefix))
        done = await asyncio.gather(*(finished(http, handler_id) for handler_id in healthy))
        failed = None if faulty is None else await finished(http, faulty)
        types = None if faulty is None else await stream_types(http, faulty)
        health = await http.get("/health")

    assert [h["status"] for h in done] == ["completed"] * HEALTHY_RUNS
    assert all(h["result"]["value"]["result"]["ticks"] == STEPS for h in done)
    assert_each_step_ran_once(served, prefix)
    if failed is not None:
        assert failed["status"] == "failed"
        assert failed["error"].startswith(ERRORS[case]), failed["error"]
        assert "tests." not in failed["error"]
        assert types is not None
        assert types[-1] == "WorkflowFailedEvent"
    assert health.status_code == 200
    assert served.process.process is not None
    assert served.process.process.poll() is None, "the server process must survive"


async def _terminate_backends(server: PostgresServer, dbname: str) -> int:
    conn = await asyncpg.connect(
        host=server.host, port=server.port, user="postgres", database="postgres"
    )
    try:
        killed = await conn.fetch(
            # The store's statement connections; losing the liveness session
            # is another fault (the process then stops its runs on purpose).
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> $2",
            dbname,
            PostgresLiveness.application_name,
        )
        return len(killed)
    finally:
        await conn.close()


@pytest.mark.parametrize("served", ["postgres"], indirect=True)
async def test_connections_killed_mid_commit_lose_nothing(served: Served) -> None:
    server = served.postgres
    assert server is not None
    dbname = str(make_url(served.database_url).database)
    steps, prefix = 12, "killed"
    async with httpx.AsyncClient(base_url=served.process.url, timeout=30) as http:
        healthy = await start_tickers(http, prefix, steps=steps)
        killed = 0
        deadline = time.monotonic() + 1.5  # the runs take about 0.6 s of steps each
        while time.monotonic() < deadline:
            killed += await _terminate_backends(server, dbname)
            await asyncio.sleep(0.05)
        done = await asyncio.gather(*(finished(http, handler_id) for handler_id in healthy))
        sequences = [await sse_ids(http, handler_id) for handler_id in healthy]

    assert killed > 0
    assert [h["status"] for h in done] == ["completed"] * HEALTHY_RUNS
    assert all(h["result"]["value"]["result"]["ticks"] == steps for h in done)
    assert_each_step_ran_once(served, prefix, steps)
    for ids in sequences:  # every streamed event kept, once, in order
        assert ids == list(range(len(ids)))


async def sse_ids(http: httpx.AsyncClient, handler_id: str) -> list[int]:
    params = {"after_sequence": "-1", "include_internal": "true"}
    response = await http.get(f"/events/{handler_id}", params=params)
    return [int(line[4:]) for line in response.iter_lines() if line.startswith("id: ")]

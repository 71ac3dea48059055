"""Replicas that are both pid 1 on one host name (containers), on one database.

Each server runs under ``unshare --pid --fork --mount-proc``: its own PID
namespace, the same host name and network. Host name and pid cannot tell such
replicas apart; their liveness tokens do.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from llama_agents.client import WorkflowClient

from llama_workflows_asgi import HandlerQuery, SqlAlchemyWorkflowStore
from tests.durability.test_multi_process import (
    assert_never_concurrent,
    intervals,
    start_tickers,
    wait_all_completed,
)
from tests.support.processes import JournalLine, ServerProcess, read_journal, server_processes
from tests.support.waiting import ownership_rounds

pytestmark = pytest.mark.timeout(180)

# SIGKILL of the unshare process reaches the server (pid 1 of its namespace).
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]


@pytest.fixture(scope="module")
def unshare() -> list[str]:
    """The wrapper command; fails (never skips) if PID namespaces are not available."""
    if shutil.which("unshare") is None:
        pytest.fail("`unshare` (util-linux) is required for this test: install util-linux")
    probe = subprocess.run([*UNSHARE, "sh", "-c", "echo $$"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.fail(f"`unshare --pid` does not work here (run as root): {probe.stderr.strip()}")
    return UNSHARE


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make_replica(
    database: str, unshare: list[str], tmp_path: Path
) -> Callable[[str], ServerProcess]:
    def make(name: str) -> ServerProcess:
        env = {"WF_DATABASE_URL": database, "WF_JOURNAL": str(tmp_path / "journal.tsv")}
        # Rounds of 0.3 s, not 1 s: the two rounds the test waits for end well before
        # the runs do, even on a loaded machine (the runs must still be owned then).
        env["WF_POLL_INTERVAL"] = "0.3"
        return ServerProcess(name, env, tmp_path, wrapper=unshare)

    return make


async def owners(database: str) -> dict[str, str | None]:
    """Ticker name (``a0``...) -> owner id of its handler, read from the database."""
    store = SqlAlchemyWorkflowStore(database)
    try:
        rows = await store.query(HandlerQuery(load_ctx=False))
    finally:
        await store.close()
    return {str((row.start_event or {})["value"]["name"]): row.owner_id for row in rows}


def starts(journal: list[JournalLine]) -> dict[tuple[str, str], list[str]]:
    """(run, tick) -> the processes that started it, in order."""
    started: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in journal:
        if line.action == "start":
            started[(line.run, line.detail)].append(line.process)
    return started


async def test_pid_1_replicas_never_take_each_other_for_dead_and_adopt_a_killed_one(
    make_replica: Callable[[str], ServerProcess], database: str, tmp_path: Path
) -> None:
    a, b = make_replica("A"), make_replica("B")
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        client_a, client_b = WorkflowClient(base_url=a.url), WorkflowClient(base_url=b.url)
        mine = await start_tickers(client_a, "a", 4, steps=50)
        theirs = await start_tickers(client_b, "b", 4, steps=50)
        # Two whole ownership rounds of each with both alive and busy.
        await ownership_rounds(database, 2, owners=2)
        owned = await owners(database)
        killed_at = a.kill()
        await wait_all_completed(client_b, mine + theirs, timeout=90)

    # Both are pid 1 on one host name: only their tokens differ.
    a_owner, b_owner = owned["a0"], owned["b0"]
    assert a_owner is not None
    assert b_owner is not None
    assert a_owner != b_owner
    assert a_owner.split(":")[:2] == b_owner.split(":")[:2]
    assert a_owner.split(":")[1] == "1"
    assert {owned[f"a{i}"] for i in range(4)} == {a_owner}
    assert {owned[f"b{i}"] for i in range(4)} == {b_owner}

    journal = read_journal(tmp_path / "journal.tsv")
    started = starts(journal)
    # While both lived, each ran only its own runs.
    before = {(line.run[0], line.process) for line in journal if line.at < killed_at}
    assert before == {("a", "A"), ("b", "B")}
    # B's runs never moved and ran every tick exactly once.
    for (run, tick), processes in started.items():
        if run.startswith("b"):
            assert processes == ["B"], (run, tick, processes)
    # A's runs were adopted by B at its next ownership round, not after the 8 s
    # lease. Only ticks whose results A had not written yet (started in its
    # last moments) ran again, once.
    adopted = [line for line in journal if line.process == "B" and line.run.startswith("a")]
    assert {line.run for line in adopted} == {f"a{i}" for i in range(4)}
    adoption = min(line.at for line in adopted) - killed_at
    assert adoption < 3.0, f"adopted {adoption:.2f}s after the kill"
    recent = {
        (line.run, line.detail)
        for line in journal
        if line.process == "A" and line.action == "start" and line.at > killed_at - 1.0
    }
    for key, processes in started.items():
        assert len(processes) == 1 or (processes == ["A", "B"] and key in recent), (key, processes)
    assert_never_concurrent(intervals(journal, {"A": killed_at}))
    print(f"adoption after SIGKILL: {adoption:.2f}s")

"""Two real replica processes on one PostgreSQL: capacity shared, versions kept apart.

Each replica's steps journal what they do (``tests.support.crash_app``); with
``WF_JOURNAL_LIVE=1`` every tick also journals how many runs are live in its
own process, so the bound is measured inside each replica, not from timing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from llama_agents.client import WorkflowClient

from tests.durability.test_multi_process import (
    assert_never_concurrent,
    intervals,
    start_tickers,
    wait_all_completed,
)
from tests.support.processes import JournalLine, ServerProcess, read_journal, server_processes
from tests.support.waiting import eventually, ownership_rounds

pytestmark = pytest.mark.timeout(240)

FAST = {"WF_POLL_INTERVAL": "0.3", "WF_LEASE_TTL": "2"}


def most_at_once(journal: list[JournalLine], process: str) -> int:
    """The most runs whose ticks overlapped in ``process`` (first tick start to last stop)."""
    spans: dict[str, list[float]] = {}
    for line in journal:
        if line.process == process and line.action in ("start", "stop"):
            first, last = spans.get(line.run, [line.at, line.at])
            spans[line.run] = [min(first, line.at), max(last, line.at)]
    edges = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    load = peak = 0
    for _, change in edges:
        load += change
        peak = max(peak, load)
    return peak


async def test_two_replicas_share_forty_runs_five_at_a_time(
    make_server: Callable[..., ServerProcess], journal_path: Path
) -> None:
    capacity = {**FAST, "WF_MAX_LIVE_RUNS": "5", "WF_JOURNAL_LIVE": "1"}
    a, b = make_server("A", **capacity), make_server("B", **capacity)
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        client_a = WorkflowClient(base_url=a.url)
        began = time.monotonic()
        starts = [start_tickers(client_a, f"r{i}-", 1, steps=5) for i in range(40)]
        runs = [handler for started in await asyncio.gather(*starts) for handler in started]
        accepted = time.monotonic() - began
        await wait_all_completed(client_a, runs, timeout=120)
        elapsed = time.monotonic() - began

    journal = read_journal(journal_path)
    live = defaultdict(list)
    for line in journal:
        if line.action == "live":
            live[line.process].append(int(line.detail))
    print(f"40 runs accepted in {accepted:.2f}s, all done in {elapsed:.2f}s")
    print({p: (len(v), max(v)) for p, v in live.items()}, "ticks and most live per replica")
    assert set(live) == {"A", "B"}, "both replicas execute work"
    assert max(live["A"]) <= 5
    assert max(live["B"]) <= 5
    assert most_at_once(journal, "A") <= 5
    assert most_at_once(journal, "B") <= 5
    ticks = Counter((line.run, line.detail) for line in journal if line.action == "start")
    assert len({run for run, _ in ticks}) == 40
    assert set(ticks.values()) == {1}, "each step executed once"
    assert len(ticks) == 40 * 5
    assert_never_concurrent(intervals(journal, {}))


def runs_of(journal: list[JournalLine], prefix: str) -> dict[str, set[str]]:
    """Which processes executed ticks of each run whose name starts with ``prefix``."""
    found: dict[str, set[str]] = defaultdict(set)
    for line in journal:
        if line.run.startswith(prefix) and line.action == "start":
            found[line.run].add(line.process)
    return found


async def ticks_after(journal_path: Path, process: str, moment: float, count: int) -> None:
    """Wait until ``process`` journaled ``count`` ticks after ``moment``."""

    def done() -> bool:
        lines = read_journal(journal_path)
        ticks = [x for x in lines if x.process == process and x.action == "stop" and x.at > moment]
        return len(ticks) >= count

    await eventually(done, f"{process} making progress", timeout=60)


async def running_ids(url: str, version: str) -> set[str]:
    async with httpx.AsyncClient(base_url=url) as http:
        listing = await http.get("/handlers", params={"status": "running", "version": version})
    assert listing.status_code == 200
    return {h["handler_id"] for h in listing.json()["handlers"]}


async def results_code(client: WorkflowClient, handler_ids: list[str]) -> set[str]:
    codes = set()
    for handler_id in handler_ids:
        done = await client.wait_for_handler(handler_id, poll_interval=0.1, timeout=60)
        assert done.status == "completed"
        assert done.result is not None
        codes.add(done.result.value["result"]["code"])
    return codes


async def test_rolling_deploy_never_resumes_a_run_on_another_version(
    make_server: Callable[..., ServerProcess], journal_path: Path, postgres_url: str
) -> None:
    v1, v2 = {**FAST, "WF_TICKER_VERSION": "v1"}, {**FAST, "WF_TICKER_VERSION": "v2"}
    a, b = make_server("A1", **v1), make_server("B1", **v2)
    a2, b2 = make_server("A2", **v1), make_server("B2", **v2)
    with server_processes(a, b, a2, b2):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        new = await start_tickers(WorkflowClient(base_url=b.url), "new", 3, steps=80)
        # Started last, killed at their first ticks: none may finish before the kill.
        old = await start_tickers(WorkflowClient(base_url=a.url), "old", 3, steps=30)
        await ticks_after(journal_path, "A1", 0, 3)
        killed_a = a.kill()
        # B (v2) runs whole rounds meanwhile, with v1 runs free to adopt: it must leave them.
        assert b.process is not None
        await ownership_rounds(postgres_url, 3, pid=b.process.pid)
        assert await running_ids(b.url, "v1") == set(old)
        assert all(ps == {"A1"} for ps in runs_of(read_journal(journal_path), "old").values())
        killed_b = b.kill()

        await asyncio.to_thread(a2.start)  # v1 is back: its runs finish there
        assert await results_code(WorkflowClient(base_url=a2.url), old) == {"v1"}
        assert await running_ids(a2.url, "v2") == set(new)  # left to v2 replicas

        await asyncio.to_thread(b2.start)
        assert await results_code(WorkflowClient(base_url=b2.url), new) == {"v2"}

    journal = read_journal(journal_path)
    old_by, new_by = runs_of(journal, "old"), runs_of(journal, "new")
    print({r: sorted(p) for r, p in {**old_by, **new_by}.items()}, "processes per run")
    assert all(processes <= {"A1", "A2"} for processes in old_by.values())
    assert all(processes <= {"B1", "B2"} for processes in new_by.values())
    assert all("A2" in processes for processes in old_by.values()), "v1 runs resumed on v1"
    assert all("B2" in processes for processes in new_by.values()), "v2 runs resumed on v2"
    assert_never_concurrent(intervals(journal, {"A1": killed_a, "B1": killed_b}))

"""Several real processes sharing one PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from llama_agents.client import WorkflowClient

from tests.support.crash_app import TickerInput
from tests.support.processes import JournalLine, ServerProcess, read_journal, server_processes
from tests.support.waiting import eventually, not_live_in, steps_ended, ticked

pytestmark = pytest.mark.timeout(240)

# A shorter lease than the default 8 s, for the test that waits for it to lapse.
LEASE = 4.0
SHORT_LEASE = {"WF_LEASE_TTL": str(LEASE), "WF_POLL_INTERVAL": "0.5"}


def intervals(
    journal: list[JournalLine], ended_at: dict[str, float]
) -> dict[str, list[tuple[str, float, float]]]:
    """Per run: (process, start, stop) of every step execution.

    Steps without a stop line end at their process's ``ended_at`` time.
    """
    open_steps: dict[tuple[str, str, str], float] = {}
    spans: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for line in journal:
        key = (line.process, line.run, line.detail)
        if line.action == "start":
            open_steps[key] = line.at
        elif line.action == "stop":
            spans[line.run].append((line.process, open_steps.pop(key), line.at))
    for (process, run, _), started in open_steps.items():
        spans[run].append((process, started, ended_at.get(process, time.time())))
    return spans


def assert_never_concurrent(spans: dict[str, list[tuple[str, float, float]]]) -> None:
    for run, steps in spans.items():
        for process_a, start_a, stop_a in steps:
            for process_b, start_b, stop_b in steps:
                if process_a != process_b:
                    overlap = min(stop_a, stop_b) - max(start_a, start_b)
                    assert overlap <= 0, (
                        f"run {run} executed by {process_a} and {process_b} at once"
                    )


async def start_tickers(client: WorkflowClient, prefix: str, count: int, steps: int) -> list[str]:
    handlers = []
    for i in range(count):
        start = TickerInput(name=f"{prefix}{i}", steps=steps, delay=0.1)
        handlers.append((await client.run_workflow_nowait("ticker", start_event=start)).handler_id)
    return handlers


async def wait_all_completed(
    client: WorkflowClient, handler_ids: list[str], timeout: float
) -> None:
    for handler_id in handler_ids:
        done = await client.wait_for_handler(handler_id, poll_interval=0.1, timeout=timeout)
        assert done.status == "completed"
        assert done.result is not None
        assert done.result.value["result"]["ticks"] > 0


async def test_killed_process_runs_are_adopted_within_the_lease_timeout(
    make_server: Callable[..., ServerProcess], journal_path: Path
) -> None:
    # Adoption of owners proven dead (liveness token free) off: only lease expiry frees them.
    a = make_server("A", WF_LOCAL_ADOPTION="0", **SHORT_LEASE)
    b = make_server("B", WF_LOCAL_ADOPTION="0", **SHORT_LEASE)
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        client_a, client_b = WorkflowClient(base_url=a.url), WorkflowClient(base_url=b.url)
        mine = await start_tickers(client_a, "a", 4, steps=40)
        theirs = await start_tickers(client_b, "b", 4, steps=20)
        await eventually(lambda: ticked(journal_path, "a", 4, 10), "A's runs well under way")
        killed_at = a.kill()
        await wait_all_completed(client_b, mine + theirs, timeout=60)

    journal = read_journal(journal_path)
    adopted = [line for line in journal if line.process == "B" and line.run.startswith("a")]
    first_adoption = min(line.at for line in adopted)
    # The heartbeat was renewed at most a round (0.5 s) before the kill.
    assert first_adoption - killed_at <= LEASE + 2.0, "adoption must happen once the lease lapsed"
    assert first_adoption - killed_at >= LEASE - 1.5, "adoption before the lease expired"
    assert {line.run for line in adopted} == {f"a{i}" for i in range(4)}
    assert_never_concurrent(intervals(journal, {"A": killed_at}))
    # B's own runs never moved.
    assert {line.process for line in journal if line.run.startswith("b")} == {"B"}


async def test_each_run_executes_in_exactly_one_live_process(
    make_server: Callable[..., ServerProcess], journal_path: Path
) -> None:
    a, b, c = make_server("A"), make_server("B"), make_server("C")
    with server_processes(a, b, c):
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in (a, b, c)))
        clients = [WorkflowClient(base_url=s.url) for s in (a, b, c)]
        runs = []
        for prefix, client in zip("abc", clients, strict=True):
            runs += await start_tickers(client, prefix, 5, steps=15)
        await wait_all_completed(clients[0], runs, timeout=60)

    journal = read_journal(journal_path)
    by_run: dict[str, set[str]] = defaultdict(set)
    for line in journal:
        by_run[line.run].add(line.process)
    assert len(by_run) == 15
    assert all(processes == {run[0].upper()} for run, processes in by_run.items())
    assert_never_concurrent(intervals(journal, {}))


async def test_graceful_shutdown_hands_runs_over_at_once_without_failing_them(
    make_server: Callable[..., ServerProcess], journal_path: Path
) -> None:
    a = make_server("A", WF_LOCAL_ADOPTION="0")
    b = make_server("B", WF_LOCAL_ADOPTION="0")
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        client_a, client_b = WorkflowClient(base_url=a.url), WorkflowClient(base_url=b.url)
        mine = await start_tickers(client_a, "a", 4, steps=40)
        await eventually(lambda: ticked(journal_path, "a", 4, 5), "A's runs under way")
        exit_code = await asyncio.to_thread(a.terminate)
        stopped_at = time.time()
        await wait_all_completed(client_b, mine, timeout=60)
        failed = await client_b.get_handlers(status=["failed"])

    assert exit_code == -15  # uvicorn re-raises SIGTERM once its graceful shutdown is done
    assert failed.handlers == []
    journal = read_journal(journal_path)
    taken_over = min(line.at for line in journal if line.process == "B")
    assert taken_over - stopped_at < 2.5, "a released run is adopted at the next ownership round"
    # A's interrupted steps were cancelled before its process exited.
    assert_never_concurrent(intervals(journal, {"A": stopped_at}))


async def test_cancel_from_another_process(
    make_server: Callable[..., ServerProcess], journal_path: Path
) -> None:
    a, b = make_server("A"), make_server("B")
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        client_a, client_b = WorkflowClient(base_url=a.url), WorkflowClient(base_url=b.url)
        [handler_id] = await start_tickers(client_a, "x", 1, steps=200)
        await eventually(lambda: ticked(journal_path, "x", 1, 4), "the run under way")
        assert (await client_b.cancel_handler(handler_id)).status == "cancelled"
        cancelled_at = time.time()
        events = [e.type async for e in client_a.get_workflow_events(handler_id)]
        await eventually(lambda: not_live_in(a.url, handler_id), "A stopped the run")
        await eventually(lambda: steps_ended(journal_path, "x0"), "its step in flight ended")
        with pytest.raises(httpx.HTTPStatusError) as status:
            await client_a.get_handler(handler_id)
        async with httpx.AsyncClient(base_url=b.url) as http:
            again = await http.post(f"/handlers/{handler_id}/cancel")

    assert status.value.response.json()["status"] == "cancelled"
    assert events[-1] == "WorkflowCancelledEvent"
    assert again.status_code == 409
    late = [
        line
        for line in read_journal(journal_path)
        if line.action == "start" and line.at > cancelled_at + 1.2
    ]
    assert late == [], "the owning process must stop the run once it sees the cancel"


async def test_event_sent_to_another_process_reaches_the_run(
    make_server: Callable[..., ServerProcess],
) -> None:
    from tests.support.workflows import AnswerEvent

    a, b = make_server("A", WF_IDLE_TIMEOUT="none"), make_server("B")
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        client_a, client_b = WorkflowClient(base_url=a.url), WorkflowClient(base_url=b.url)
        handler = await client_a.run_workflow_nowait("hitl")
        async for event in client_b.get_workflow_events(handler.handler_id):
            if event.type == "AskEvent":
                break
        await client_b.send_event(handler.handler_id, AnswerEvent(answer="from B"))
        done = await client_b.wait_for_handler(handler.handler_id, poll_interval=0.1, timeout=20)
    assert done.result is not None
    assert done.result.value == {"result": "got from B"}

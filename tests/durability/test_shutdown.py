"""SIGINT and SIGTERM with event streams open, under plain ``uvicorn`` (a host's app).

The crash app runs as ``python -m uvicorn --factory ...``, with no server
option about shutdown: the router's lifespan alone makes the stop prompt.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess, read_journal, server_processes

pytestmark = pytest.mark.timeout(120)

ITEMS = [f"i{n}" for n in range(8)]
STOP_TIMEOUT = 5.0  # ServiceConfig's default, which the crash app keeps
UNCLEAN = ("Traceback", "Task was destroyed", "graceful shutdown exceeded", "could not write")


async def read_stream(
    base_url: str, handler_id: str, last_event_id: int, seen: list[tuple[int, dict]]
) -> None:
    """Append ``(id, event)`` of every SSE frame until the server ends the stream."""
    headers = {"Last-Event-ID": str(last_event_id)}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        http.stream("GET", f"/events/{handler_id}", headers=headers) as response,
    ):
        assert response.status_code == 200
        frame_id = None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                frame_id = int(line[4:])
            elif line.startswith("data: "):
                assert frame_id is not None
                seen.append((frame_id, json.loads(line[6:])))


def progress(seen: list[tuple[int, dict]]) -> list[str]:
    return [e["value"]["item"] for _, e in seen if e["type"] == "ProgressEvent"]


async def wait_until(check: object, timeout: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_ends_open_streams_releases_runs_and_exits_promptly(
    signum: signal.Signals, tmp_path: Path
) -> None:
    env = {
        "WF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "WF_JOURNAL": str(tmp_path / "journal.tsv"),
    }
    first, second = ServerProcess("first", env, tmp_path), ServerProcess("second", env, tmp_path)
    with server_processes(first, second):
        await asyncio.to_thread(first.start)
        async with httpx.AsyncClient(base_url=first.url) as http:
            start = {"start_event": {"name": "s", "items": ITEMS, "delay": 0.3}}
            created = await http.post("/workflows/processing/run-nowait", json=start)
        handler_id = created.json()["handler_id"]
        before: list[tuple[int, dict]] = []
        streaming = asyncio.create_task(read_stream(first.url, handler_id, -1, before))
        await wait_until(lambda: len(progress(before)) >= 2, 20)

        assert first.process is not None
        signalled = time.monotonic()
        first.process.send_signal(signum)
        await asyncio.wait_for(streaming, STOP_TIMEOUT)  # ended cleanly, no error
        code = await asyncio.to_thread(first.process.wait, 30)
        exit_time = time.monotonic() - signalled

        second.port = first.port
        await asyncio.to_thread(second.start)
        after: list[tuple[int, dict]] = []
        await asyncio.wait_for(read_stream(second.url, handler_id, before[-1][0], after), 30)
        async with httpx.AsyncClient(base_url=second.url) as http:
            final = (await http.get(f"/handlers/{handler_id}")).json()
            failed = (await http.get("/handlers", params={"status": "failed"})).json()

    log = first.log()
    assert exit_time < STOP_TIMEOUT + 1.0, f"exited {exit_time:.2f}s after {signum.name}"
    assert not [bad for bad in UNCLEAN if bad in log], log
    assert code in (0, -signum), (code, log)
    # The client went on from its Last-Event-ID: every item once, in order.
    assert progress(before) + progress(after) == [f"processed:{item}" for item in ITEMS]
    ids = [i for i, _ in before + after]
    assert ids == sorted(set(ids))
    assert after[-1][1]["type"] == "ProcessOutput"
    assert final["status"] == "completed"
    assert failed["handlers"] == []
    # Resumed from the checkpoint: the second process began where the first stopped.
    journal = read_journal(tmp_path / "journal.tsv")
    begins = [(line.process, line.detail) for line in journal if line.action == "begin"]
    on_first = [item for process, item in begins if process == "first"]
    on_second = [item for process, item in begins if process == "second"]
    assert on_first == ITEMS[: len(on_first)]
    assert len(on_first) >= 3
    # At most the item in flight at the signal ran again.
    assert on_second in (ITEMS[len(on_first) - 1 :], ITEMS[len(on_first) :])
    print(f"{signum.name}: exit {exit_time:.2f}s")

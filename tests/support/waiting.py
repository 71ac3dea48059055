"""Waiting on conditions instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from tests.support.processes import read_journal

POLL = 0.02


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    """Return as soon as ``check()`` (plain or async) is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(POLL)


def eventually_sync(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """:func:`eventually` for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(POLL)


def ticks(journal: Path, run_prefix: str) -> dict[str, int]:
    """Finished ticker steps per run whose name starts with ``run_prefix`` (crash app journal)."""
    counts: dict[str, int] = {}
    for line in read_journal(journal):
        if line.run.startswith(run_prefix) and line.action == "stop":
            counts[line.run] = counts.get(line.run, 0) + 1
    return counts


def ticked(journal: Path, run_prefix: str, runs: int, at_least: int) -> bool:
    """Whether ``runs`` runs named ``run_prefix...`` each finished ``at_least`` steps."""
    done = [n for n in ticks(journal, run_prefix).values() if n >= at_least]
    return len(done) >= runs


async def progress_written(url: str, handler_id: str) -> bool:
    """Whether the server has written progress of the run since it started."""
    async with httpx.AsyncClient(base_url=url) as http:
        body = (await http.get(f"/handlers/{handler_id}")).json()
    return body.get("updated_at") not in (None, body.get("started_at"))


async def handler_status(url: str, handler_id: str) -> str | None:
    """The handler's status as the server answers it (``None`` if it does not)."""
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get(f"/handlers/{handler_id}")
    status = response.json().get("status") if response.status_code != 404 else None
    return status if isinstance(status, str) else None

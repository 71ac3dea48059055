"""Waiting on conditions instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from llama_workflows_asgi.store.schema import owners_table
from tests.support.processes import read_journal
from tests.support.rows import sql_reader

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


def parked_in(task: asyncio.Task[Any], qualname: str) -> bool:
    """Whether ``task`` is suspended inside the coroutine ``qualname`` (``Class.method``).

    Follows what each coroutine awaits, from the task's own down to the future
    it waits on: true once the task got as far as that wait, and not done.
    """
    awaitable: Any = task.get_coro()
    while awaitable is not None and not task.done():
        code = getattr(awaitable, "cr_code", None)
        if code is not None and code.co_qualname == qualname:
            return True
        awaitable = getattr(awaitable, "cr_await", None)
    return False


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


async def ownership_rounds(
    database_url: str,
    rounds: int,
    *,
    owners: int = 1,
    pid: int | None = None,
    timeout: float = 30.0,
) -> None:
    """Wait until ``owners`` processes (of ``pid``, if given) each ran ``rounds`` whole rounds.

    Only rounds begun after this call count. A round renews its process's
    heartbeat (``workflow_owners.heartbeat_at``) first and claims orphaned runs
    last, so a process has run ``rounds`` whole rounds once its heartbeat has
    taken ``rounds + 1`` new values since first seen here. A test that checks
    that something does *not* happen waits for this: the rounds had their chance.
    A claim that takes runs renews the heartbeat too, so this counts rounds only
    while the process claims nothing (what the tests that use it check).
    """
    seen: dict[str, set[object]] = {}
    query = select(owners_table.c.owner_id, owners_table.c.heartbeat_at)
    async with sql_reader(database_url) as engine:

        async def renewed() -> bool:
            async with engine.connect() as conn:
                for owner_id, beat in await conn.execute(query):
                    if pid is None or owner_id.split(":")[1] == str(pid):
                        seen.setdefault(owner_id, set()).add(beat)
            done = [beats for beats in seen.values() if len(beats) >= rounds + 2]
            return len(done) >= owners

        what = f"{owners} process(es) to run {rounds} ownership round(s)"
        await eventually(renewed, what, timeout)


async def not_live_in(url: str, handler_id: str) -> bool:
    """Whether the run is no longer live in the crash app's process at ``url``."""
    async with httpx.AsyncClient(base_url=url) as http:
        live = (await http.get("/test/live")).json()["handlers"]
    return handler_id not in live


def steps_ended(journal: Path, run: str) -> bool:
    """Whether every ticker step ``run`` started (crash app journal) has ended."""
    actions = [line.action for line in read_journal(journal) if line.run == run]
    return actions.count("start") == actions.count("stop")

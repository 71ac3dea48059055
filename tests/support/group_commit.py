"""Batch functions over a small table of their own, for the group commit's tests (``store._batch``).

Its batch functions write one key per payload, so each test says exactly which
writes shared a transaction, which failed, and what was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llama_workflows_asgi.errors import ConflictError, StoreUnavailableError
from llama_workflows_asgi.store._batch import BatchFunction, GroupCommit, Outcome, Result

Calls = list[tuple[str, list[str]]]
Writer = GroupCommit[AsyncConnection]


async def keys(engine: AsyncEngine) -> set[str]:
    """The keys written to the table."""
    async with engine.connect() as conn:
        return set((await conn.execute(text("SELECT k FROM kv"))).scalars())


def putter(calls: Calls, kind: str = "put") -> BatchFunction[AsyncConnection, str, int]:
    """A batch function inserting each key; ``taken`` is refused, ``bug`` and ``down`` raise."""

    async def put(conn: AsyncConnection, payloads: list[str]) -> list[Outcome[int]]:
        calls.append((kind, list(payloads)))
        outcomes: list[Outcome[int]] = []
        for key in payloads:
            if key == "bug":
                raise RuntimeError("a faulty write")
            if key == "down":
                raise ConnectionRefusedError("the database is away")
            if key == "taken":
                outcomes.append(ConflictError(f"{key} is taken"))  # nothing written for it
                continue
            await conn.execute(text("INSERT INTO kv VALUES (:k)"), {"k": key})
            outcomes.append(len(key))
        return outcomes

    return put


class Dirty:
    """A source of keys to write: ``add`` marks one, the writer takes them all at once."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.takes = 0
        self.results: list[tuple[str, object]] = []
        self.given_back: list[list[str]] = []
        self.decided = asyncio.Event()

    def take(self) -> list[str]:
        self.takes += 1
        taken, self.pending = self.pending, []
        return taken

    def settled(self, results: Sequence[tuple[str, Result[int]]]) -> None:
        self.results.extend(results)
        self.decided.set()

    def kept(self, payloads: Sequence[str], error: StoreUnavailableError) -> None:
        self.given_back.append(list(payloads))
        self.pending[:0] = payloads  # nothing dropped: written by a later batch
        self.decided.set()


async def until(source: Dirty, condition: Callable[[], bool]) -> None:
    """Wait for ``condition``, re-checked each time the writer tells ``source`` something."""
    while not condition():
        source.decided.clear()
        await source.decided.wait()

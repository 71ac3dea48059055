"""What a store holds, read behind the server's back: row counts and orphaned rows.

For the SQL stores the tables are read directly with a separate engine; for the
memory store its dictionaries (its "tables") are read. Nothing here goes through
the run service, so a bug there cannot hide what was written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llama_workflows_asgi import MemoryWorkflowStore
from llama_workflows_asgi.store import AbstractWorkflowStore


@dataclass(frozen=True)
class RowCounts:
    """How many handler, event-log and inbox rows a store holds."""

    handlers: int
    events: int
    inbox: int


@dataclass(frozen=True)
class Orphans:
    """Rows that no handler accounts for any more."""

    events: int
    """Event-log rows whose run is not the current run of any handler."""
    inbox: int
    """Inbox rows whose handler is gone, finished or running another run."""


CountRows = Callable[[], Awaitable[RowCounts]]

_COUNTS = text(
    "SELECT (SELECT count(*) FROM workflow_handlers),"
    " (SELECT count(*) FROM workflow_events),"
    " (SELECT count(*) FROM workflow_inbox)"
)
_ORPHANS = text(
    "SELECT"
    " (SELECT count(*) FROM workflow_events e WHERE NOT EXISTS"
    "   (SELECT 1 FROM workflow_handlers h WHERE h.run_id = e.run_id)),"
    " (SELECT count(*) FROM workflow_inbox i WHERE NOT EXISTS"
    "   (SELECT 1 FROM workflow_handlers h WHERE h.handler_id = i.handler_id"
    "    AND h.run_id = i.run_id AND h.status = 'running'))"
)


@asynccontextmanager
async def sql_reader(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the store's database, disposed afterwards."""
    engine = create_async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def sql_counts(engine: AsyncEngine) -> RowCounts:
    """Row counts of the three ``workflow_`` tables."""
    async with engine.connect() as conn:
        handlers, events, inbox = (await conn.execute(_COUNTS)).one()
    return RowCounts(handlers, events, inbox)


async def sql_orphans(engine: AsyncEngine) -> Orphans:
    """Event and inbox rows not belonging to a handler's current (running) run."""
    async with engine.connect() as conn:
        events, inbox = (await conn.execute(_ORPHANS)).one()
    return Orphans(events, inbox)


def memory_counts(store: AbstractWorkflowStore) -> RowCounts:
    """Row counts of a memory store, read from its dictionaries."""
    assert isinstance(store, MemoryWorkflowStore)
    events = sum(len(log) for log in store._events.values())
    return RowCounts(len(store._handlers), events, len(store._inbox))


def memory_orphans(store: AbstractWorkflowStore) -> Orphans:
    """Like :func:`sql_orphans`, for a memory store."""
    assert isinstance(store, MemoryWorkflowStore)
    current_runs = {h.run_id for h in store._handlers.values()}
    events = sum(len(log) for run_id, log in store._events.items() if run_id not in current_runs)
    running = {(h.handler_id, h.run_id) for h in store._handlers.values() if not h.is_terminal}
    inbox = sum(1 for e in store._inbox.values() if (e.handler_id, e.run_id) not in running)
    return Orphans(events, inbox)


@asynccontextmanager
async def row_counter(
    store: AbstractWorkflowStore, database_url: str | None
) -> AsyncIterator[CountRows]:
    """Counts the rows ``store`` holds, read directly (not through the API)."""
    if database_url is None:

        async def count_memory() -> RowCounts:
            return memory_counts(store)

        yield count_memory
        return
    async with sql_reader(database_url) as engine:

        async def count_sql() -> RowCounts:
            return await sql_counts(engine)

        yield count_sql

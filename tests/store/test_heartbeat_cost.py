"""An ownership round costs the same whatever the number of live runs.

Statements and written rows are counted with SQLAlchemy cursor hooks on a real
SQLite file and a real PostgreSQL server, at 10 and at 5,000 live runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._rows import handler_values
from llama_workflows_asgi.store.base import utcnow
from llama_workflows_asgi.store.schema import handlers_table
from tests.support.factories import handler

ME = "host:1:Lme"
_WRITES = ("INSERT", "UPDATE", "DELETE")


@dataclass
class Tally:
    """Statements sent and rows written while counting."""

    statements: list[str] = field(default_factory=list)
    rows_written: int = 0


@contextmanager
def counting(store: SqlAlchemyWorkflowStore) -> Iterator[Tally]:
    """Count every cursor execution of the store's engines (both, on SQLite)."""
    tally = Tally()

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        tally.statements.append(statement.split(None, 1)[0].upper())

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(_WRITES) and cursor.rowcount > 0:
            tally.rows_written += cursor.rowcount

    engines: list[Engine] = list({id(e): e for e in _sync_engines(store)}.values())
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
    try:
        yield tally
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)


def _sync_engines(store: SqlAlchemyWorkflowStore) -> list[Engine]:
    return [store.write_engine.sync_engine, store.read_engine.sync_engine]


async def add_live_runs(store: SqlAlchemyWorkflowStore, owner: str, first: int, count: int) -> None:
    """``count`` running rows owned by ``owner``, written directly (no engines run)."""
    rows = [
        handler_values(handler(f"h{i:05}", owner_id=owner)) for i in range(first, first + count)
    ]
    async with store.write_engine.begin() as conn:
        for start in range(0, len(rows), 500):
            await conn.execute(insert(handlers_table), rows[start : start + 500])


async def ownership_round(store: SqlAlchemyWorkflowStore) -> set[str]:
    """What an ownership round asks of the store: heartbeat, owners to probe, claims."""
    now = utcnow()
    until = now + timedelta(seconds=8)
    owned = await store.heartbeat(ME, now=now, expires_at=until)
    await store.list_owners()
    assert await store.claim_handlers(ME, now=now, lease_until=until) == []
    return owned


async def test_round_cost_is_flat_in_live_runs(sql_store: SqlAlchemyWorkflowStore) -> None:
    await ownership_round(sql_store)  # warm up: connections, owner row
    tallies: dict[int, Tally] = {}
    written = 0
    for total in (10, 5000):
        await add_live_runs(sql_store, ME, written, total - written)
        written = total
        with counting(sql_store) as tally:
            owned = await ownership_round(sql_store)
        assert len(owned) == total
        tallies[total] = tally
    dialect = sql_store.url.get_backend_name()
    for total, tally in tallies.items():
        print(
            f"{dialect} {total} live runs: {len(tally.statements)} statements "
            f"{tally.statements}, {tally.rows_written} rows written"
        )
    assert tallies[10].statements == tallies[5000].statements
    # One row per round: our heartbeat; no run's row is touched.
    assert tallies[10].rows_written == tallies[5000].rows_written == 1

"""Deleting old finished runs in bounded batches (retention).

Each batch is one short transaction: pick at most ``limit`` finished handlers
older than the cutoff, delete them and their events and inbox entries. Only
the picked rows are locked, never a whole table, so runs keep being written
between (and during) batches.

* PostgreSQL picks rows with ``FOR UPDATE SKIP LOCKED`` in a materialized CTE
  (rows a concurrent write holds are left for the next round), and an
  exclusive batch first takes the transaction-level advisory lock
  ``pg_try_advisory_xact_lock``: if another process holds it, that process is
  pruning and this one stops its round instead of doing the same work twice.
* SQLite deletes by ``rowid IN (SELECT rowid ... LIMIT n)``; its write lock
  (``BEGIN IMMEDIATE``) already makes every batch the only writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Integer, delete, func, literal, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningDelete

from ._writes import drop_run_data
from .base import FinishedStatus
from .schema import UtcDateTime, handlers_table

# Key of the advisory lock held by a pruning batch ("prune" in ASCII), distinct
# from the migration lock's.
PRUNE_LOCK_KEY = 0x7072756E65

handlers = handlers_table
c = handlers.c


def prunable(cutoff: datetime, statuses: Sequence[FinishedStatus]) -> list[ColumnElement[bool]]:
    """Conditions of a handler retention may delete."""
    moment = literal(cutoff, UtcDateTime())
    finished_at = func.coalesce(c.completed_at, c.updated_at, c.started_at)
    # A run finished before the cutoff started before it: the started_at bound
    # lets the (status, started_at) index narrow the scan.
    return [c.status.in_(list(statuses)), c.started_at < moment, finished_at < moment]


async def count(conn: AsyncConnection, cutoff: datetime, statuses: Sequence[FinishedStatus]) -> int:
    """How many handlers a prune with these arguments would delete."""
    stmt = select(func.count()).select_from(handlers).where(*prunable(cutoff, statuses))
    return int(await conn.scalar(stmt) or 0)


async def delete_batch(
    conn: AsyncConnection,
    cutoff: datetime,
    statuses: Sequence[FinishedStatus],
    limit: int,
    *,
    exclusive: bool,
) -> int | None:
    """Delete one batch; ``None`` if ``exclusive`` and another process is pruning."""
    postgres = conn.dialect.name == "postgresql"
    if exclusive and postgres:
        locked = await conn.scalar(select(func.pg_try_advisory_xact_lock(PRUNE_LOCK_KEY)))
        if not locked:
            return None
    stmt = _postgres_delete if postgres else _sqlite_delete
    rows = (await conn.execute(stmt(cutoff, statuses, limit))).all()
    await drop_run_data(
        conn, [row.handler_id for row in rows], [row.run_id for row in rows if row.run_id]
    )
    return len(rows)


def _postgres_delete(
    cutoff: datetime, statuses: Sequence[FinishedStatus], limit: int
) -> ReturningDelete[tuple[str, str | None]]:
    picked = (
        select(c.handler_id)
        .where(*prunable(cutoff, statuses))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("doomed")
        # Materialized: a rescanned LIMIT ... SKIP LOCKED could pick more rows.
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    return (
        delete(handlers)
        .where(c.handler_id == picked.c.handler_id)
        .returning(c.handler_id, c.run_id)
    )


def _sqlite_delete(
    cutoff: datetime, statuses: Sequence[FinishedStatus], limit: int
) -> ReturningDelete[tuple[str, str | None]]:
    rowid = literal_column("rowid", Integer())
    picked = select(rowid).select_from(handlers).where(*prunable(cutoff, statuses)).limit(limit)
    return delete(handlers).where(rowid.in_(picked)).returning(c.handler_id, c.run_id)

"""The SQL store's reads: statements run on a read connection, rows handed back.

Reads of many runs or handlers go in chunks (``_queries.chunks``), so no
statement binds more parameters than SQLite or asyncpg allow, and each id is
read once however often it is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ._queries import chunks, listing
from ._rows import event_from_row
from .base import HandlerQuery, StoredEvent
from .schema import events_table, handlers_table, inbox_table, owners_table


async def handlers(conn: AsyncConnection, query: HandlerQuery) -> list[Mapping[Any, Any]]:
    """The handler rows ``query`` lists."""
    return await all_mappings(conn, listing(query))


async def by_idempotency_key(conn: AsyncConnection, key: str) -> list[Mapping[Any, Any]]:
    """The handler row holding ``key`` (none or one)."""
    stmt = select(handlers_table).where(handlers_table.c.idempotency_key == key)
    return await all_mappings(conn, stmt)


async def events(
    conn: AsyncConnection, run_id: str, after_sequence: int, limit: int
) -> list[StoredEvent]:
    """Up to ``limit`` events of ``run_id`` after ``after_sequence``, in order."""
    e = events_table.c
    stmt = (
        select(events_table)
        .where(e.run_id == run_id, e.sequence > after_sequence)
        .order_by(e.sequence)
        .limit(limit)
    )
    return [event_from_row(row) for row in await all_mappings(conn, stmt)]


async def new_events(
    conn: AsyncConnection, positions: Mapping[str, int], limit: int
) -> dict[str, list[StoredEvent]]:
    """Up to ``limit`` events in all, of each run after its position, by run."""
    e = events_table.c
    # One index range per run ((run_id, sequence) is the primary key): both
    # PostgreSQL (a BitmapOr) and SQLite (its OR optimisation) read only new rows.
    wanted = [and_(e.run_id == run, e.sequence > after) for run, after in positions.items()]
    stmt = select(events_table).where(or_(*wanted)).order_by(e.run_id, e.sequence).limit(limit)
    found: dict[str, list[StoredEvent]] = {}
    for row in await all_mappings(conn, stmt):
        found.setdefault(row["run_id"], []).append(event_from_row(row))
    return found


async def last_sequences(conn: AsyncConnection, run_ids: Sequence[str]) -> list[Any]:
    e = events_table.c
    rows: list[Any] = []
    for ids in chunks(list(dict.fromkeys(run_ids))):
        stmt = select(e.run_id, func.max(e.sequence)).where(e.run_id.in_(ids)).group_by(e.run_id)
        rows.extend(await all_rows(conn, stmt))
    return rows


async def inbox_rows(conn: AsyncConnection, handler_ids: Sequence[str]) -> list[Mapping[Any, Any]]:
    rows: list[Mapping[Any, Any]] = []
    for ids in chunks(list(dict.fromkeys(handler_ids))):
        stmt = select(inbox_table).where(inbox_table.c.handler_id.in_(ids))
        rows.extend(await all_mappings(conn, stmt))
    return rows


async def owners(conn: AsyncConnection) -> set[str]:
    """The owners that have a row (a heartbeat, lapsed or not)."""
    rows = await all_rows(conn, select(owners_table.c.owner_id))
    return {owner for (owner,) in rows}


async def queued(conn: AsyncConnection) -> dict[str, int]:
    """Runs waiting for an owner (running, unowned, not idle), by workflow name."""
    h = handlers_table.c
    stmt = (
        select(h.workflow_name, func.count())
        .where(h.status == "running", h.owner_id.is_(None), h.idle_since.is_(None))
        .group_by(h.workflow_name)
    )
    return {name: count for name, count in await all_rows(conn, stmt)}


async def all_mappings(conn: AsyncConnection, stmt: Any) -> list[Mapping[Any, Any]]:
    return list((await conn.execute(stmt)).mappings().all())


async def all_rows(conn: AsyncConnection, stmt: Any) -> list[Any]:
    return list((await conn.execute(stmt)).all())

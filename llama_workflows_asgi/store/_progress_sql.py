"""The statements of the progress write (``_progress``), on either dialect.

Each function takes the batch's whole data and sends it in as few statements
as it can: through SQLAlchemy on PostgreSQL, with ids and rows bound as arrays (see
``_pg_bulk``), and on any SQLite dialect that is not plain ``qmark``; through
the driver on SQLite (see ``_driver_sql``). The statements are the same
constructs either way; SQLite's are only compiled once and handed their rows
as tuples.

A row is read back only for what decides on it (:data:`DECIDING`) and written
back only with the columns its items set, so a finished run's result never
travels twice and a checkpoint is written only when there is a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import Update, bindparam, delete, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from . import state
from ._driver_sql import (
    EVENT_COLUMNS,
    asyncpg_text,
    driver_text,
    event_arrays,
    event_rows,
    plain_asyncpg,
    plain_sqlite,
    sqlite_value,
)
from ._pg_bulk import BulkInsert, by_dialect, by_key, unnested
from ._queries import chunks
from ._rows import event_values
from ._writes import c, events, handlers, inbox
from .base import StoredEvent

DECIDING: tuple[str, ...] = ("status", "run_id", "owner_id")
"""What a requirement reads of a row (``state.RowState``): all a progress write reads back."""

WRITTEN: tuple[str, ...] = tuple(state.RowChanges.__annotations__)
"""Every column a transition may set, in the order an UPDATE names them."""

Decided = tuple[str, dict[str, Any]]
"""A handler id and its :data:`DECIDING` values."""

# Idempotent: when a connection dies mid-commit the commit may have happened;
# the writer then sends the same events (same run, same sequences: only the
# owner writes them) again. PostgreSQL takes the rows as arrays (``_pg_bulk``).
_EVENT_KEY = [events.c.run_id, events.c.sequence]
_EVENTS = BulkInsert(events, conflict=_EVENT_KEY)
_ASYNCPG_EVENTS, _order = asyncpg_text(_EVENTS.postgresql)
assert _order == EVENT_COLUMNS, _order
_SQLITE_EVENTS, _order = driver_text(
    sqlite.insert(events).on_conflict_do_nothing(index_elements=_EVENT_KEY)
)
assert _order == EVENT_COLUMNS, _order
# A write goes in blocks of a power of two rows, each one statement of that many
# VALUES: the longest first, then one block per bit of the rest (1,001 events
# are 7 x 128 + 64 + 32 + 8 + 1). One statement per block, where an executemany
# would be one step per row: a quarter less of SQLite's own CPU, and the driver
# lets go of the GIL once per statement, not once per row (each time the event
# loop's thread holds it, taking it back waits up to the switch interval). Eight
# texts in all, so each is prepared once (the driver's statement cache).
_LONGEST = 128
_SQLITE_EVENT_BLOCKS = {
    size: _SQLITE_EVENTS.replace(
        "VALUES (?, ?, ?, ?, ?, ?, ?)", "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * size)
    )
    for size in (1 << bit for bit in range(_LONGEST.bit_length()))
}
assert all(text.count("?") == n * len(EVENT_COLUMNS) for n, text in _SQLITE_EVENT_BLOCKS.items())

# Ids bound as an expanded IN list, or as one array on PostgreSQL (``_pg_bulk``).
_LOCK = by_dialect(
    lambda ids: (
        select(c.handler_id, *(c[name] for name in DECIDING))
        .where(ids(c.handler_id))
        .order_by(c.handler_id)  # a stable lock order keeps two processes from deadlocking
        .with_for_update()
    )
)
_CONSUME = by_dialect(lambda ids: delete(inbox).where(ids(inbox.c.id)))
_CLEAR_INBOXES = by_dialect(lambda ids: delete(inbox).where(ids(inbox.c.handler_id)))
# SQLite: one executemany of a one-row statement, whatever the number of ids.
_SQLITE_CONSUME, _ = driver_text(delete(inbox).where(inbox.c.id == bindparam("id")))
_SQLITE_CLEAR, _ = driver_text(delete(inbox).where(inbox.c.handler_id == bindparam("id")))


async def lock(conn: AsyncConnection, handler_ids: Sequence[str]) -> list[Decided]:
    """The rows of ``handler_ids`` that exist, locked (``FOR UPDATE``; on SQLite, already)."""
    rows: list[Decided] = []
    for ids in chunks(sorted(handler_ids)):
        if plain_sqlite(conn.dialect):
            result = await conn.exec_driver_sql(_sqlite_lock(len(ids)), [tuple(ids)])
        else:
            result = await conn.execute(_LOCK[conn.dialect.name], {"ids": list(ids)})
        rows.extend((row[0], dict(zip(DECIDING, row[1:], strict=True))) for row in result)
    return rows


_SQLITE_LOCK_ONE, _ = driver_text(
    select(c.handler_id, *(c[name] for name in DECIDING)).where(c.handler_id.in_([bindparam("id")]))
)


@lru_cache(maxsize=64)
def _sqlite_lock(count: int) -> str:
    """The lock's text for ``count`` ids on SQLite: the one-id text, its list repeated."""
    text = _SQLITE_LOCK_ONE.replace("IN (?)", "IN (" + ", ".join(["?"] * count) + ")", 1)
    assert text.count("?") == count, text
    return text


async def update_rows(conn: AsyncConnection, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """Write each handler's changed columns: one executemany per set of columns changed."""
    shapes: dict[tuple[str, ...], list[tuple[str, Mapping[str, Any]]]] = {}
    for handler_id, sets in rows.items():
        shape = tuple(name for name in WRITTEN if name in sets)
        shapes.setdefault(shape, []).append((handler_id, sets))
    for shape, changed in shapes.items():
        if plain_sqlite(conn.dialect):
            text, make = _sqlite_update(shape)
            await conn.exec_driver_sql(text, [make(hid, sets) for hid, sets in changed])
            continue
        params = [{f"b_{k}": v for k, v in sets.items()} | {"b_id": h} for h, sets in changed]
        if conn.dialect.name == "postgresql":  # every row in one UPDATE ... FROM unnest(...)
            statement, keys = _pg_update(shape)
            await conn.execute(statement, by_key(params, keys))
        else:
            await conn.execute(_update(shape), params)


@lru_cache(maxsize=128)
def _update(shape: tuple[str, ...]) -> Update:
    values = {name: bindparam(f"b_{name}", type_=c[name].type) for name in shape}
    return update(handlers).where(c.handler_id == bindparam("b_id")).values(values)


@lru_cache(maxsize=128)
def _pg_update(shape: tuple[str, ...]) -> tuple[Update, list[str]]:
    """``_update(shape)`` for PostgreSQL: the rows' values as one array per column."""
    each = unnested({"b_id": c.handler_id} | {f"b_{name}": c[name] for name in shape})
    values = {name: each.c[f"b_{name}"] for name in shape}
    return update(handlers).where(c.handler_id == each.c.b_id).values(values), list(each.c.keys())


RowMaker = Callable[[str, Mapping[str, Any]], tuple[Any, ...]]


@lru_cache(maxsize=128)
def _sqlite_update(shape: tuple[str, ...]) -> tuple[str, RowMaker]:
    text, order = driver_text(_update(shape))
    # The statement's parameters: the columns set, in table order, then "b_id".
    columns = [c[name.removeprefix("b_")] for name in order[:-1]]
    assert order[-1] == "b_id", order
    assert len(columns) == len(shape), order

    def make(handler_id: str, sets: Mapping[str, Any]) -> tuple[Any, ...]:
        return (*(sqlite_value(col, sets[col.name]) for col in columns), handler_id)

    return text, make


async def insert_events(conn: AsyncConnection, pairs: Sequence[tuple[str, StoredEvent]]) -> None:
    """Append ``(run_id, event)`` pairs to the log; an event already there is left as it is."""
    if not pairs:
        return
    if plain_sqlite(conn.dialect):  # the bulk of a long write: see ``_driver_sql``
        rows = event_rows(pairs)
        start = 0
        for size in _block_sizes(len(rows)):
            block = rows[start : start + size]
            await conn.exec_driver_sql(
                _SQLITE_EVENT_BLOCKS[size], [tuple(chain.from_iterable(block))]
            )
            start += size
    elif plain_asyncpg(conn.dialect):  # the arrays as asyncpg takes them: see ``_driver_sql``
        await conn.exec_driver_sql(_ASYNCPG_EVENTS, event_arrays(pairs))
    else:
        await _EVENTS.execute(conn, [event_values(run_id, event) for run_id, event in pairs])


def _block_sizes(rows: int) -> list[int]:
    """How :func:`insert_events` splits ``rows`` rows into blocks (see ``_LONGEST``)."""
    sizes = [_LONGEST] * (rows // _LONGEST)
    rest = rows % _LONGEST
    return sizes + [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]


async def delete_inbox(
    conn: AsyncConnection, consumed: Sequence[int], cleared: Sequence[str]
) -> None:
    """Delete the entries ``consumed`` and every entry of the handlers ``cleared``."""
    if plain_sqlite(conn.dialect):
        if consumed:
            await conn.exec_driver_sql(_SQLITE_CONSUME, [(entry,) for entry in consumed])
        if cleared:
            await conn.exec_driver_sql(_SQLITE_CLEAR, [(hid,) for hid in cleared])
        return
    dialect = conn.dialect.name
    for ids in chunks(consumed):
        await conn.execute(_CONSUME[dialect], {"ids": list(ids)})
    for hids in chunks(cleared):
        await conn.execute(_CLEAR_INBOXES[dialect], {"ids": list(hids)})

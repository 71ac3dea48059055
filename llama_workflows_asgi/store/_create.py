"""Handler creation and replacement, as a batch function for the group-commit writer.

Every fresh row of a batch goes in one prebuilt ``INSERT ... ON CONFLICT DO
NOTHING ... RETURNING`` (a conflict writes nothing and is told apart by the
rows returned); a replacement is a conditional UPDATE of the finished row,
inside a SAVEPOINT for its idempotency key. The owners of the rows written
are vouched for in the same transaction (see :func:`_vouch_for_owners`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import ConflictError, WorkflowServerError
from . import state
from ._batch import Outcome
from ._driver_sql import driver_text, plain_sqlite, sqlite_value
from ._pg_bulk import BulkInsert
from ._queries import chunks
from ._rows import handler_values
from ._writes import admitting, c, drop_run_data, handlers, key_conflicts_as_errors, owners
from .base import HandlerExistsError, IdempotencyKeyExistsError, PersistentHandler
from .schema import UtcDateTime

# Prebuilt statements of the hot path: their compiled forms are cached once,
# where a statement built per batch pays its construction and cache key again.
_CREATE = BulkInsert(handlers, returning=[c.handler_id, c.run_id])
_UNTIL = bindparam("until", type_=UtcDateTime())
_VOUCH = (
    update(owners)
    .where(owners.c.owner_id == bindparam("owner"), owners.c.expires_at < _UNTIL)
    .values(expires_at=_UNTIL)
)


@dataclass(frozen=True)
class Create:
    """Payload of :func:`create_handler`."""

    handler: PersistentHandler
    replaces_run_id: str | None


async def create_handler(conn: AsyncConnection, ops: list[Create]) -> list[Outcome[None]]:
    """Batch function for ``create_handler``: every new row in one statement."""
    fresh = [op.handler for op in ops if op.replaces_run_id is None]
    written = await _insert_new(conn, fresh) if fresh else set()
    outcomes: list[Outcome[None]] = []
    for op in ops:
        try:
            if op.replaces_run_id is not None:
                await _replace(conn, op.handler, op.replaces_run_id)
            elif (op.handler.handler_id, op.handler.run_id) not in written:
                raise await _creation_conflict(conn, op.handler)
            outcomes.append(None)
        except WorkflowServerError as error:
            outcomes.append(error)
    written_rows = [op.handler for op, out in zip(ops, outcomes, strict=True) if out is None]
    await _vouch_for_owners(conn, written_rows)
    return outcomes


async def _vouch_for_owners(conn: AsyncConnection, rows: Sequence[PersistentHandler]) -> None:
    """Keep the owners of ``rows`` alive at least until the rows' leases, in their transaction.

    A process writing a run it owns is alive. Without this a row committed
    after its owner's heartbeat lapsed (a slow write) could be adopted at
    once, and run twice. An expiry is only ever extended here, and only of an
    owner that has a row (its rounds write it before it owns anything).
    """
    until: dict[str, datetime] = {}
    for row in rows:
        if row.owner_id is not None and row.lease_expires_at is not None:
            until[row.owner_id] = max(
                until.get(row.owner_id, row.lease_expires_at), row.lease_expires_at
            )
    if until:
        params = [{"owner": owner, "until": at} for owner, at in until.items()]
        await conn.execute(_VOUCH, params)


async def _insert_new(
    conn: AsyncConnection, new: list[PersistentHandler]
) -> set[tuple[str, str | None]]:
    """Insert the rows whose id and idempotency key are free; return those written.

    DO NOTHING on any unique conflict (id or idempotency key, with the table or
    with an earlier row of the batch): a row is either written or untouched,
    and the transaction goes on either way. Rows are told apart by run id.
    """
    if plain_sqlite(conn.dialect):  # the rows as tuples, in one statement (see _driver_sql)
        written: set[tuple[str, str | None]] = set()
        for part in chunks(new, _SQLITE_ROWS):
            text, flatten = _sqlite_create(len(part))
            written.update(tuple(row) for row in await conn.exec_driver_sql(text, [flatten(part)]))
        return written
    # One prebuilt statement whatever the batch size (see ``_pg_bulk``).
    rows = await _CREATE.execute(conn, [handler_values(h) for h in new])
    return {(row.handler_id, row.run_id) for row in rows}


# Rows per SQLite statement: 19 columns each, far below its 32,766 parameters.
_SQLITE_ROWS = 256


_COLUMNS = list(handlers.c)
_ONE_ROW, _order = driver_text(
    sqlite.insert(handlers).on_conflict_do_nothing().returning(c.handler_id, c.run_id)
)
assert _order == tuple(col.name for col in _COLUMNS), _order
_ROW = "(" + ", ".join(["?"] * len(_COLUMNS)) + ")"


@lru_cache(maxsize=_SQLITE_ROWS)
def _sqlite_create(
    count: int,
) -> tuple[str, Callable[[Sequence[PersistentHandler]], tuple[Any, ...]]]:
    """``_CREATE`` for ``count`` rows on SQLite (one-row text, its VALUES group repeated)."""
    text = _ONE_ROW.replace(f"VALUES {_ROW}", "VALUES " + ", ".join([_ROW] * count), 1)
    assert text.count("?") == count * len(_COLUMNS), text

    def flatten(handlers_: Sequence[PersistentHandler]) -> tuple[Any, ...]:
        values = [handler_values(h) for h in handlers_]
        return tuple(sqlite_value(col, row[col.name]) for row in values for col in _COLUMNS)

    return text, flatten


async def _creation_conflict(conn: AsyncConnection, handler: PersistentHandler) -> ConflictError:
    taken = await conn.scalar(select(c.handler_id).where(c.handler_id == handler.handler_id))
    if taken is not None or handler.idempotency_key is None:
        return HandlerExistsError(handler.handler_id)
    return IdempotencyKeyExistsError(handler.idempotency_key)


async def _replace(conn: AsyncConnection, handler: PersistentHandler, old_run_id: str) -> None:
    values = handler_values(handler)
    del values["handler_id"]
    stmt = (
        update(handlers)
        .where(c.handler_id == handler.handler_id, *admitting(state.replaceable(old_run_id)))
        .values(values)
    )
    async with key_conflicts_as_errors(conn, handler):
        if (await conn.execute(stmt)).rowcount != 1:
            raise HandlerExistsError(handler.handler_id)
    await drop_run_data(conn, [handler.handler_id], [old_run_id])

"""The store's writes, as batch functions for the group-commit writer (``_batch``).

Progress has a module of its own (``_progress``), and so have ownership
(``_ownership``) and handler creation (``_create``); this one holds the helpers
they share, upserts and deletes, finals, the inbox and retries.

Each function receives the payloads of consecutive jobs of its kind and
returns one outcome per payload. A failed precondition is returned as an error
(``HandlerExistsError``...) after writing nothing for that payload: it is
detected with a conditional statement (its row count or RETURNING), or inside
a SAVEPOINT when only the database can tell (a unique idempotency key), so it
never aborts the transaction the other jobs share.

Rows a write decides on are locked first (``FOR UPDATE`` on PostgreSQL; on
SQLite ``BEGIN IMMEDIATE`` already made this transaction the only writer), so
another process cannot change them between the decision and the write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import WorkflowServerError
from . import state
from ._batch import BatchFunction, Outcome
from ._notify_pg import notify
from ._queries import chunks, query_filters
from ._rows import event_values, handler_values
from .base import (
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    Status,
    StoredEvent,
)
from .schema import UtcDateTime, events_table, handlers_table, inbox_table, owners_table

P = TypeVar("P")
R = TypeVar("R")

handlers, events, inbox, owners = handlers_table, events_table, inbox_table, owners_table
c = handlers.c


def one_by_one(
    write: Callable[[AsyncConnection, P], Awaitable[R]],
) -> BatchFunction[AsyncConnection, P, R]:
    """A batch function applying ``write`` to each payload in turn."""

    async def run(conn: AsyncConnection, payloads: list[P]) -> list[Outcome[R]]:
        outcomes: list[Outcome[R]] = []
        for payload in payloads:
            try:
                outcomes.append(await write(conn, payload))
            except WorkflowServerError as error:
                outcomes.append(error)
        return outcomes

    run.__name__ = run.__qualname__ = write.__name__
    return run


def admitting(requirement: state.Requirement) -> list[ColumnElement[bool]]:
    """``requirement`` (see ``state``) as WHERE clauses on the handler table."""
    clauses: list[ColumnElement[bool]] = [c.status.in_(sorted(requirement.statuses))]
    run = c.run_id
    clauses.append(run.is_not(None) if requirement.run_id is None else run == requirement.run_id)
    if requirement.fenced:  # == None compiles to IS NULL: an unowned row
        clauses.append(c.owner_id == requirement.owner_id)
    return clauses


def upsert_insert(conn: AsyncConnection) -> Any:
    # ON CONFLICT is spelled the same way by both dialects' insert() constructs.
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def drop_run_data(
    conn: AsyncConnection, handler_ids: Sequence[str], run_ids: Sequence[str]
) -> None:
    """Delete the event logs of ``run_ids`` and the inboxes of ``handler_ids``."""
    for ids in chunks(run_ids):
        await conn.execute(delete(events).where(events.c.run_id.in_(ids)))
    for ids in chunks(handler_ids):
        await conn.execute(delete(inbox).where(inbox.c.handler_id.in_(ids)))


# -- handler rows ------------------------------------------------------------------


@asynccontextmanager
async def key_conflicts_as_errors(
    conn: AsyncConnection, handler: PersistentHandler
) -> AsyncIterator[None]:
    """A SAVEPOINT around a write whose idempotency key may already be taken."""
    try:
        async with conn.begin_nested():
            yield
    except IntegrityError as error:
        if handler.idempotency_key is None:
            raise
        raise IdempotencyKeyExistsError(handler.idempotency_key) from error


async def _upsert_handler(conn: AsyncConnection, handler: PersistentHandler) -> None:
    previous = await conn.scalar(
        select(c.run_id).where(c.handler_id == handler.handler_id).with_for_update()
    )
    insert_ = upsert_insert(conn)(handlers).values(handler_values(handler))
    stmt = insert_.on_conflict_do_update(
        index_elements=[c.handler_id],
        set_={
            col.name: insert_.excluded[col.name] for col in handlers.c if col.name != "handler_id"
        },
    )
    async with key_conflicts_as_errors(conn, handler):
        await conn.execute(stmt)
    if previous is not None and previous != handler.run_id:
        await _drop_replaced_run(conn, handler, previous)


async def _drop_replaced_run(conn: AsyncConnection, handler: PersistentHandler, old: str) -> None:
    """The row now holds another run: the old run's log and inbox would be orphans."""
    await conn.execute(delete(events).where(events.c.run_id == old))
    stale = inbox.c.handler_id == handler.handler_id
    if handler.run_id is not None:
        stale = stale & (inbox.c.run_id != handler.run_id)
    await conn.execute(delete(inbox).where(stale))


upsert_handler = one_by_one(_upsert_handler)


async def _delete_handlers(conn: AsyncConnection, query: HandlerQuery) -> int:
    stmt = delete(handlers).where(*query_filters(query)).returning(c.handler_id, c.run_id)
    rows = (await conn.execute(stmt)).all()
    await drop_run_data(
        conn, [row.handler_id for row in rows], [row.run_id for row in rows if row.run_id]
    )
    return len(rows)


delete_handlers = one_by_one(_delete_handlers)


# -- finals ------------------------------------------------------------------------


@dataclass(frozen=True)
class Finalize:
    """Payload of :func:`finalize_handler`."""

    handler_id: str
    status: Status
    error: str | None
    event: StoredEvent
    at: datetime


async def _finalize_handler(conn: AsyncConnection, op: Finalize) -> bool:
    transition = state.finalize(op.status, error=op.error, at=op.at)
    stmt = (
        update(handlers)
        .where(c.handler_id == op.handler_id, *admitting(transition.requires))
        .values(dict(transition.sets))
        .returning(c.run_id)
    )
    run_id: str | None = (await conn.execute(stmt)).scalar_one_or_none()
    if run_id is None:
        return False
    # The run's owner may have written events up to the moment we locked the row.
    last = select(func.max(events.c.sequence)).where(events.c.run_id == run_id).scalar_subquery()
    values = event_values(run_id, op.event) | {"sequence": func.coalesce(last + 1, 0)}
    await conn.execute(insert(events).values(values))
    await conn.execute(delete(inbox).where(inbox.c.handler_id == op.handler_id))
    await notify(conn, {"wake": [op.handler_id], "events": [run_id]})
    return True


finalize_handler = one_by_one(_finalize_handler)


# -- inbox -------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueue:
    """Payload of :func:`enqueue_event`."""

    handler_id: str
    run_id: str
    payload: str
    step: str | None
    at: datetime


async def _enqueue_event(conn: AsyncConnection, op: Enqueue) -> int | None:
    # INSERT ... SELECT from the handler row, FOR SHARE: the entry is written
    # only while the run is live, and a concurrent finalize or delete (which
    # clears the inbox) either waits for it or makes it insert nothing.
    source = (
        select(
            c.handler_id,
            c.run_id,
            literal(op.payload, inbox.c.payload.type),
            literal(op.step, inbox.c.step.type),
            literal(op.at, UtcDateTime()),
        )
        .where(c.handler_id == op.handler_id, *admitting(state.accepts_events(op.run_id)))
        .with_for_update(read=True)
    )
    columns = ["handler_id", "run_id", "payload", "step", "created_at"]
    stmt = insert(inbox).from_select(columns, source).returning(inbox.c.id)
    entry_id: int | None = (await conn.execute(stmt)).scalar_one_or_none()
    if entry_id is not None:
        await notify(conn, {"wake": [op.handler_id]})
    return entry_id


enqueue_event = one_by_one(_enqueue_event)


# -- retry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reopen:
    """Payload of :func:`reopen_handler`."""

    handler_id: str
    run_id: str
    ctx: str | None
    at: datetime


async def _reopen_handler(conn: AsyncConnection, op: Reopen) -> bool:
    transition = state.reopen(op.run_id, ctx=op.ctx, at=op.at)
    stmt = (
        update(handlers)
        .where(c.handler_id == op.handler_id, *admitting(transition.requires))
        .values(dict(transition.sets))
    )
    if (await conn.execute(stmt)).rowcount != 1:
        return False
    # The failure is history now: streams end at the new attempt's final event.
    ended = events.c.run_id == op.run_id, events.c.terminal.is_(True)
    await conn.execute(update(events).where(*ended).values(terminal=False))
    return True


reopen_handler = one_by_one(_reopen_handler)

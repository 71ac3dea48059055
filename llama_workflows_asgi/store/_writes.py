"""The store's writes, as batch functions for the group-commit writer.

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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Text, bindparam, case, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import ConflictError, WorkflowServerError
from ._notify_pg import notify
from ._queries import chunks, claimable, query_filters
from ._rows import event_values, handler_from_row, handler_values
from .base import (
    TERMINAL_STATUSES,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    RunProgress,
    Status,
    StoredEvent,
)
from .schema import UtcDateTime, events_table, handlers_table, inbox_table

P = TypeVar("P")
R = TypeVar("R")

handlers, events, inbox = handlers_table, events_table, inbox_table
c = handlers.c


def one_by_one(
    write: Callable[[AsyncConnection, P], Awaitable[R]],
) -> Callable[[AsyncConnection, list[P]], Awaitable[list[Any]]]:
    """A batch function applying ``write`` to each payload in turn."""

    async def run(conn: AsyncConnection, payloads: list[P]) -> list[Any]:
        outcomes: list[Any] = []
        for payload in payloads:
            try:
                outcomes.append(await write(conn, payload))
            except WorkflowServerError as error:
                outcomes.append(error)
        return outcomes

    run.__name__ = run.__qualname__ = write.__name__
    return run


def _upsert_insert(conn: AsyncConnection) -> Any:
    # ON CONFLICT is spelled the same way by both dialects' insert() constructs.
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def _drop_run_data(
    conn: AsyncConnection, handler_ids: Sequence[str], run_ids: Sequence[str]
) -> None:
    """Delete the event logs of ``run_ids`` and the inboxes of ``handler_ids``."""
    for ids in chunks(run_ids):
        await conn.execute(delete(events).where(events.c.run_id.in_(ids)))
    for ids in chunks(handler_ids):
        await conn.execute(delete(inbox).where(inbox.c.handler_id.in_(ids)))


# -- handler rows ------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """Payload of :func:`create_handler`."""

    handler: PersistentHandler
    replaces_run_id: str | None


async def create_handler(conn: AsyncConnection, ops: list[Create]) -> list[Any]:
    """Batch function for ``create_handler``: every new row in one statement."""
    fresh = [op.handler for op in ops if op.replaces_run_id is None]
    written = await _insert_new(conn, fresh) if fresh else set()
    outcomes: list[Any] = []
    for op in ops:
        try:
            if op.replaces_run_id is not None:
                await _replace(conn, op.handler, op.replaces_run_id)
            elif (op.handler.handler_id, op.handler.run_id) not in written:
                raise await _creation_conflict(conn, op.handler)
            outcomes.append(None)
        except WorkflowServerError as error:
            outcomes.append(error)
    return outcomes


async def _insert_new(
    conn: AsyncConnection, new: list[PersistentHandler]
) -> set[tuple[str, str | None]]:
    """Insert the rows whose id and idempotency key are free; return those written.

    DO NOTHING on any unique conflict (id or idempotency key, with the table or
    with an earlier row of the batch): a row is either written or untouched,
    and the transaction goes on either way. Rows are told apart by run id.
    """
    written: set[tuple[str, str | None]] = set()
    for group in chunks(new, 100):
        stmt = (
            _upsert_insert(conn)(handlers)
            .values([handler_values(handler) for handler in group])
            .on_conflict_do_nothing()
            .returning(c.handler_id, c.run_id)
        )
        written.update((row.handler_id, row.run_id) for row in await conn.execute(stmt))
    return written


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
        .where(c.handler_id == handler.handler_id, c.run_id == old_run_id)
        .where(c.status.in_(sorted(TERMINAL_STATUSES)))
        .values(values)
    )
    async with _key_conflicts_as_errors(conn, handler):
        if (await conn.execute(stmt)).rowcount != 1:
            raise HandlerExistsError(handler.handler_id)
    await _drop_run_data(conn, [handler.handler_id], [old_run_id])


@asynccontextmanager
async def _key_conflicts_as_errors(
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
    insert_ = _upsert_insert(conn)(handlers).values(handler_values(handler))
    stmt = insert_.on_conflict_do_update(
        index_elements=[c.handler_id],
        set_={
            col.name: insert_.excluded[col.name] for col in handlers.c if col.name != "handler_id"
        },
    )
    async with _key_conflicts_as_errors(conn, handler):
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
    await _drop_run_data(
        conn, [row.handler_id for row in rows], [row.run_id for row in rows if row.run_id]
    )
    return len(rows)


delete_handlers = one_by_one(_delete_handlers)


# -- progress ----------------------------------------------------------------------

# Columns a progress write reads, decides on and rewrites (never the checkpoint).
_STATE_COLUMNS = (
    "status",
    "run_id",
    "owner_id",
    "lease_expires_at",
    "resume_attempts",
    "result",
    "error",
    "updated_at",
    "completed_at",
    "idle_since",
)

_PROGRESS_UPDATE = (
    update(handlers)
    .where(c.handler_id == bindparam("b_handler_id"))
    .values(
        {name: bindparam(f"b_{name}", type_=c[name].type) for name in _STATE_COLUMNS}
        # ctx is NULL in the parameters when this batch brought no new checkpoint.
        | {"ctx": func.coalesce(bindparam("b_ctx", type_=Text()), c.ctx)}
    )
)


@dataclass
class _RunState:
    """A handler row as progress items change it, before it is written back."""

    values: dict[str, Any]
    ctx: str | None = None
    changed: bool = False


@dataclass
class _ProgressPlan:
    """Applies progress items in order against locked rows; then writes the outcome."""

    states: dict[str, _RunState]
    events: list[dict[str, Any]] = field(default_factory=list)
    consumed: list[int] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def apply(self, item: RunProgress) -> bool:
        """Apply ``item`` if it is fenced in (its writer still owns the run)."""
        state = self.states.get(item.handler_id)
        if state is None or not _fenced_in(state.values, item):
            return False
        values = state.values
        values.update(updated_at=item.updated_at, idle_since=item.idle_since)
        if item.ctx is not None:
            state.ctx = item.ctx
        if item.reset_attempts:
            values["resume_attempts"] = 0
        if item.status != "running":
            values.update(status=item.status, result=item.result, error=item.error)
            values.update(completed_at=item.updated_at, idle_since=None)
            self.finished.append(item.handler_id)
        if item.status != "running" or item.release:
            values.update(owner_id=None, lease_expires_at=None)
        state.changed = True
        self.events.extend(event_values(item.run_id, event) for event in item.events)
        self.consumed.extend(item.consumed_inbox)
        return True

    async def write(self, conn: AsyncConnection) -> None:
        """One executemany per table, whatever the number of items."""
        rows = [_update_params(hid, s) for hid, s in self.states.items() if s.changed]
        if rows:
            await conn.execute(_PROGRESS_UPDATE, rows)
        if self.events:
            # Idempotent: when a connection dies mid-commit the commit may have
            # happened; the writer then sends the same events (same run, same
            # sequences: only the owner writes them) again.
            insert_ = _upsert_insert(conn)(events).on_conflict_do_nothing(
                index_elements=[events.c.run_id, events.c.sequence]
            )
            await conn.execute(insert_, self.events)
            await notify(conn, {"events": {event["run_id"] for event in self.events}})
        for ids in chunks(self.consumed):
            await conn.execute(delete(inbox).where(inbox.c.id.in_(ids)))
        for hids in chunks(self.finished):
            await conn.execute(delete(inbox).where(inbox.c.handler_id.in_(hids)))


def _fenced_in(values: dict[str, Any], item: RunProgress) -> bool:
    status, run_id, owner_id = values["status"], values["run_id"], values["owner_id"]
    return bool(status == "running" and run_id == item.run_id and owner_id == item.owner_id)


def _update_params(handler_id: str, state: _RunState) -> dict[str, Any]:
    params = {f"b_{name}": state.values[name] for name in _STATE_COLUMNS}
    params.update(b_handler_id=handler_id, b_ctx=state.ctx)
    return params


async def _lock_states(conn: AsyncConnection, handler_ids: Sequence[str]) -> dict[str, _RunState]:
    states: dict[str, _RunState] = {}
    columns = [c.handler_id, *(c[name] for name in _STATE_COLUMNS)]
    for ids in chunks(sorted(handler_ids)):
        # A stable lock order keeps two processes' batches from deadlocking.
        stmt = select(*columns).where(c.handler_id.in_(ids)).order_by(c.handler_id)
        for row in (await conn.execute(stmt.with_for_update())).mappings():
            values = dict(row)
            states[values.pop("handler_id")] = _RunState(values)
    return states


async def save_progress(conn: AsyncConnection, batches: list[Sequence[RunProgress]]) -> list[Any]:
    """Batch function for ``save_progress``: all batches of the group in one pass.

    Items are decided in submission order, as if each batch ran alone, but the
    rows are read once and written back with one statement per table.
    """
    touched = {item.handler_id for batch in batches for item in batch}
    plan = _ProgressPlan(await _lock_states(conn, list(touched)))
    outcomes: list[Any] = []
    for batch in batches:
        outcomes.append({item.handler_id for item in batch if not plan.apply(item)})
    await plan.write(conn)
    return outcomes


@dataclass(frozen=True)
class Finalize:
    """Payload of :func:`finalize_handler`."""

    handler_id: str
    status: Status
    error: str | None
    event: StoredEvent
    at: datetime


async def _finalize_handler(conn: AsyncConnection, op: Finalize) -> bool:
    stmt = (
        update(handlers)
        .where(c.handler_id == op.handler_id, c.status == "running", c.run_id.is_not(None))
        .values(status=op.status, error=op.error, result=None, updated_at=op.at)
        .values(completed_at=op.at, idle_since=None, owner_id=None, lease_expires_at=None)
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
        .where(c.handler_id == op.handler_id, c.run_id == op.run_id, c.status == "running")
        .with_for_update(read=True)
    )
    columns = ["handler_id", "run_id", "payload", "step", "created_at"]
    stmt = insert(inbox).from_select(columns, source).returning(inbox.c.id)
    entry_id: int | None = (await conn.execute(stmt)).scalar_one_or_none()
    if entry_id is not None:
        await notify(conn, {"wake": [op.handler_id]})
    return entry_id


enqueue_event = one_by_one(_enqueue_event)


# -- ownership ---------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Payload of :func:`claim_handlers`."""

    owner_id: str
    now: datetime
    lease_until: datetime
    dead_owners: tuple[str, ...]
    handler_ids: tuple[str, ...] | None
    limit: int


async def _claim_handlers(conn: AsyncConnection, op: Claim) -> list[PersistentHandler]:
    candidate = handlers.alias("candidate")
    pick = (
        select(candidate.c.handler_id, candidate.c.owner_id)
        .where(claimable(candidate, now=op.now, dead_owners=op.dead_owners))
        .order_by(candidate.c.started_at, candidate.c.handler_id)
        .limit(op.limit)
        # Rows another process is claiming right now are skipped, not waited for;
        # the picked ones stay locked until this transaction ends.
        .with_for_update(skip_locked=True, of=candidate)
    )
    if op.handler_ids is not None:
        pick = pick.where(candidate.c.handler_id.in_(op.handler_ids))
    # Picked first, then updated by id: the previous owners are reported (an
    # UPDATE's RETURNING only sees new values), and exactly the locked rows
    # are taken.
    previous = {row.handler_id: row.owner_id for row in await conn.execute(pick)}
    if not previous:
        return []
    stmt = (
        update(handlers)
        .where(c.handler_id.in_(list(previous)))
        .where(claimable(handlers, now=op.now, dead_owners=op.dead_owners))
        .values(owner_id=op.owner_id, lease_expires_at=op.lease_until)
        # Taking a run from an owner that did not release it is a resume attempt.
        .values(resume_attempts=c.resume_attempts + case((c.owner_id.is_(None), 0), else_=1))
        .returning(*handlers.c)
    )
    claimed = [
        handler_from_row(row).model_copy(
            update={"previous_owner_id": previous.get(row["handler_id"])}
        )
        for row in (await conn.execute(stmt)).mappings()
    ]
    return sorted(claimed, key=lambda h: (h.started_at, h.handler_id))


claim_handlers = one_by_one(_claim_handlers)


async def _renew_leases(conn: AsyncConnection, op: tuple[str, datetime]) -> set[str]:
    owner_id, lease_until = op
    stmt = (
        update(handlers)
        .where(c.owner_id == owner_id, c.status == "running")
        .values(lease_expires_at=lease_until)
        .returning(c.handler_id)
    )
    return set((await conn.execute(stmt)).scalars())


renew_leases = one_by_one(_renew_leases)


async def _release_handlers(conn: AsyncConnection, op: tuple[str, tuple[str, ...] | None]) -> None:
    owner_id, handler_ids = op
    await notify(conn, {"free": handler_ids or ["*"]})
    stmt = (
        update(handlers).where(c.owner_id == owner_id).values(owner_id=None, lease_expires_at=None)
    )
    if handler_ids is None:
        await conn.execute(stmt)
        return
    for ids in chunks(handler_ids):
        await conn.execute(stmt.where(c.handler_id.in_(ids)))


release_handlers = one_by_one(_release_handlers)


# -- retry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reopen:
    """Payload of :func:`reopen_handler`."""

    handler_id: str
    run_id: str
    ctx: str | None
    at: datetime


async def _reopen_handler(conn: AsyncConnection, op: Reopen) -> bool:
    stmt = (
        update(handlers)
        .where(c.handler_id == op.handler_id, c.run_id == op.run_id, c.status == "failed")
        .values(status="running", ctx=op.ctx, error=None, result=None, updated_at=op.at)
        .values(completed_at=None, idle_since=None, owner_id=None, lease_expires_at=None)
        .values(resume_attempts=0)
    )
    if (await conn.execute(stmt)).rowcount != 1:
        return False
    # The failure is history now: streams end at the new attempt's final event.
    ended = events.c.run_id == op.run_id, events.c.terminal.is_(True)
    await conn.execute(update(events).where(*ended).values(terminal=False))
    return True


reopen_handler = one_by_one(_reopen_handler)

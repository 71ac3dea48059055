"""What the ``runs`` commands ask of the store: pages within age bounds, one handler, its
last events, a cancel written straight to the row.

The commands (``_runs.py``) parse options and print; nothing here prints.
"""

from __future__ import annotations

from datetime import datetime

from workflows.events import WorkflowCancelledEvent

from .. import codec
from ..errors import ConflictError, HandlerNotFoundError
from ..store.base import HandlerCursor, HandlerQuery, PersistentHandler, StoredEvent, utcnow
from ..store.sqlalchemy import SqlAlchemyWorkflowStore


async def page(
    store: SqlAlchemyWorkflowStore,
    query: HandlerQuery,
    after: HandlerCursor | None,
    older: datetime | None,
    newer: datetime | None,
    limit: int,
) -> tuple[list[PersistentHandler], HandlerCursor | None]:
    """One page within the age bounds: keyset from one bound, stop at the other.

    Newest first starts below ``older`` and stops at ``newer``; oldest first
    the other way round. (``(t, "")`` sorts before every handler started at ``t``.)
    """
    start, stop = (older, newer) if query.descending else (newer, older)
    if after is None and start is not None:
        after = HandlerCursor(start, "")
    rows = await store.query(query.model_copy(update={"after": after, "limit": limit + 1}))
    if stop is not None:
        rows = [h for h in rows if (h.started_at >= stop) == query.descending]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], HandlerCursor(last.started_at, last.handler_id)


async def find_handler(store: SqlAlchemyWorkflowStore, handler_id: str) -> PersistentHandler:
    rows = await store.query(HandlerQuery(handler_id_in=[handler_id], load_ctx=False))
    if not rows:
        raise HandlerNotFoundError(handler_id)
    return rows[0]


async def last_events(
    store: SqlAlchemyWorkflowStore, handler: PersistentHandler, count: int
) -> list[StoredEvent]:
    if handler.run_id is None or count == 0:
        return []
    last = (await store.last_sequences([handler.run_id])).get(handler.run_id, -1)
    return await store.read_events(handler.run_id, after_sequence=last - count, limit=count)


async def cancel(store: SqlAlchemyWorkflowStore, handler_id: str) -> PersistentHandler:
    """Cancel a running handler in its row; the process executing it stops it at its next round.

    Raises ``HandlerNotFoundError``, and ``ConflictError`` once it has finished.
    """
    handler = await find_handler(store, handler_id)
    encoded = codec.encode(WorkflowCancelledEvent())
    event = StoredEvent(-1, encoded.payload, encoded.event_type, encoded.internal, encoded.terminal)
    done = not handler.is_terminal and await store.finalize_handler(
        handler_id, status="cancelled", error=None, event=event, at=utcnow()
    )
    if not done:
        latest = await find_handler(store, handler_id)
        raise ConflictError(f"Handler '{handler_id}' is already {latest.status}")
    return await find_handler(store, handler_id)

"""Pages of handlers: a listing scoped to the caller, cut at ``max_page_size``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..store.base import (
    AbstractWorkflowStore,
    HandlerCursor,
    HandlerQuery,
    PersistentHandler,
    Status,
)


@dataclass(frozen=True)
class HandlerPage:
    """A page of handlers and the cursor of the next one (``None`` on the last page)."""

    handlers: list[PersistentHandler]
    next_cursor: HandlerCursor | None


async def read_page(
    store: AbstractWorkflowStore,
    query: HandlerQuery,
    *,
    max_size: int,
    principal_in: list[str | None] | None,
) -> HandlerPage:
    """A page of ``query``'s handlers (without checkpoints), at most ``max_size`` long.

    ``principal_in`` (the caller, when handlers are scoped) replaces the
    query's own principal filter. One row more than the page is read, to know
    whether another page follows.
    """
    size = min(query.limit or max_size, max_size)
    scoped = query.model_copy(
        update={
            "limit": size + 1,
            "load_ctx": False,
            "principal_in": principal_in or query.principal_in,
        }
    )
    rows = await store.query(scoped)
    if len(rows) <= size:
        return HandlerPage(rows, None)
    last = rows[size - 1]
    return HandlerPage(rows[:size], HandlerCursor(last.started_at, last.handler_id))


def page_query(
    statuses: Sequence[Status] | None,
    workflow_names: Sequence[str] | None,
    handler_ids: Sequence[str] | None,
    descending: bool,
    after: HandlerCursor | None,
    limit: int | None,
    *,
    versions: Sequence[str] | None = None,
) -> HandlerQuery:
    """The store query for a listing's filters (``None``: no filter), after ``after``."""
    return HandlerQuery(
        status_in=None if statuses is None else list(statuses),
        workflow_name_in=None if workflow_names is None else list(workflow_names),
        handler_id_in=None if handler_ids is None else list(handler_ids),
        version_in=None if versions is None else list(versions),
        descending=descending,
        after=after,
        limit=limit,
    )

"""``cli._queries``: what the ``runs`` commands read and write, on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from llama_workflows_asgi.cli._queries import cancel, find_handler, last_events, page
from llama_workflows_asgi.errors import ConflictError, HandlerNotFoundError
from llama_workflows_asgi.store import (
    HandlerCursor,
    HandlerQuery,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
)
from tests.support.factories import at, event, handler, progress

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlAlchemyWorkflowStore]:
    """Five handlers started a minute apart (h0 first), h0 with three events, h4 completed."""
    store = SqlAlchemyWorkflowStore(f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}", migrate=True)
    await store.start()
    for n in range(5):
        await store.create_handler(handler(f"h{n}", started_at=at(60 * n)))
    await store.save_progress([progress(handler("h0"), events=[event(s) for s in range(3)])])
    await store.save_progress([progress(handler("h4"), status="completed", result="{}")])
    try:
        yield store
    finally:
        await store.close()


def ids(rows: list[PersistentHandler]) -> list[str]:
    return [row.handler_id for row in rows]


async def test_a_page_within_age_bounds_and_its_next_cursor(store: SqlAlchemyWorkflowStore) -> None:
    newest_first = HandlerQuery(descending=True, load_ctx=False)
    rows, cursor = await page(store, newest_first, None, at(200), at(30), 2)
    assert ids(rows) == ["h3", "h2"]  # started before 200 s, newest first
    assert cursor == HandlerCursor(at(120), "h2")
    rest, end = await page(store, newest_first, cursor, at(200), at(30), 2)
    assert (ids(rest), end) == (["h1"], None)  # h0 started before the newer bound
    oldest_first = HandlerQuery(load_ctx=False)
    rows, _ = await page(store, oldest_first, None, at(200), at(30), 10)
    assert ids(rows) == ["h1", "h2", "h3"]


async def test_a_handler_and_its_last_events(store: SqlAlchemyWorkflowStore) -> None:
    found = await find_handler(store, "h0")
    assert [e.sequence for e in await last_events(store, found, 2)] == [1, 2]
    assert await last_events(store, found, 0) == []
    with pytest.raises(HandlerNotFoundError):
        await find_handler(store, "nope")


async def test_a_cancel_finishes_the_row_once(store: SqlAlchemyWorkflowStore) -> None:
    done = await cancel(store, "h1")
    assert done.status == "cancelled"
    assert done.completed_at is not None
    assert (await last_events(store, done, 1))[0].event_type == "WorkflowCancelledEvent"
    with pytest.raises(ConflictError, match="already cancelled"):
        await cancel(store, "h1")
    with pytest.raises(ConflictError, match="already completed"):
        await cancel(store, "h4")
    assert at(0) + timedelta(minutes=1) == (await find_handler(store, "h1")).started_at

"""``service.listing``: pages of handlers, scoped, cut at the page size."""

from __future__ import annotations

from llama_workflows_asgi import HandlerQuery, MemoryWorkflowStore
from llama_workflows_asgi.service.listing import page_query, read_page
from tests.support.factories import at, handler


async def filled() -> MemoryWorkflowStore:
    store = MemoryWorkflowStore()
    for i in range(5):
        owner = "alice" if i % 2 else "bob"
        await store.update(handler(f"h{i}", started_at=at(i), principal=owner, ctx={"i": i}))
    return store


async def test_pages_follow_one_another_by_cursor() -> None:
    store = await filled()
    first = await read_page(store, HandlerQuery(limit=2), max_size=10, principal_in=None)
    assert [h.handler_id for h in first.handlers] == ["h0", "h1"]
    assert first.next_cursor is not None
    assert (first.next_cursor.started_at, first.next_cursor.handler_id) == (at(1), "h1")
    rest = await read_page(
        store, HandlerQuery(after=first.next_cursor), max_size=10, principal_in=None
    )
    assert [h.handler_id for h in rest.handlers] == ["h2", "h3", "h4"]
    assert rest.next_cursor is None
    assert all(h.ctx is None for h in first.handlers + rest.handlers)  # no checkpoints


async def test_the_page_size_is_capped_and_the_scope_replaces_the_filter() -> None:
    store = await filled()
    capped = await read_page(store, HandlerQuery(limit=100), max_size=3, principal_in=None)
    assert len(capped.handlers) == 3
    assert capped.next_cursor is not None
    query = HandlerQuery(principal_in=["bob"])
    scoped = await read_page(store, query, max_size=10, principal_in=["alice"])
    assert [h.handler_id for h in scoped.handlers] == ["h1", "h3"]


def test_page_query_turns_filters_into_a_store_query() -> None:
    query = page_query(["failed"], None, ("a", "b"), True, None, 5)
    assert query == HandlerQuery(
        status_in=["failed"], handler_id_in=["a", "b"], descending=True, limit=5
    )
    assert page_query(None, None, None, False, None, None) == HandlerQuery()

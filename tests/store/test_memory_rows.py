"""``store._memory_rows``: the memory store's rows, the count of finished ones, their eviction."""

from __future__ import annotations

from llama_workflows_asgi.store import HandlerQuery, MemoryWorkflowStore
from llama_workflows_asgi.store._memory_rows import matching, order_key
from tests.support.factories import at, event, handler, progress


async def ids(store: MemoryWorkflowStore) -> list[str]:
    return [h.handler_id for h in await store.query(HandlerQuery())]


async def test_the_oldest_finished_handlers_go_first_with_their_logs() -> None:
    store = MemoryWorkflowStore(max_completed=2)
    for name, finished in [("old", 1), ("new", 3), ("mid", 2)]:
        row = handler(name, owner_id="me")
        await store.create_handler(row)
        done = progress(row, events=[event(0)], status="completed", updated_at=at(finished))
        await store.save_progress([done])
    await store.create_handler(handler("live", started_at=at(-5)))
    # Running handlers never count; of three finished ones the first to finish went.
    assert await ids(store) == ["live", "mid", "new"]
    assert await store.read_events("run-old") == []
    assert [e.sequence for e in await store.read_events("run-mid")] == [0]


async def test_a_bound_of_zero_keeps_no_finished_handler_and_none_keeps_all() -> None:
    bounded, unbounded = MemoryWorkflowStore(0), MemoryWorkflowStore(None)
    for store in (bounded, unbounded):
        for i in range(3):
            await store.update(handler(f"h{i}", status="failed", started_at=at(i)))
    assert await ids(bounded) == []
    assert await ids(unbounded) == ["h0", "h1", "h2"]


async def finish(
    store: MemoryWorkflowStore, handler_id: str, seconds: float, status: str = "completed"
) -> None:
    """Create ``handler_id`` and let its owner write its end at ``seconds``."""
    row = handler(handler_id, owner_id="me")
    await store.create_handler(row)
    end = progress(row, status=status, events=[event(0)], updated_at=at(seconds))
    assert await store.save_progress([end]) == set()


async def test_a_reopened_handler_is_no_longer_counted_as_finished() -> None:
    store = MemoryWorkflowStore(max_completed=1)
    await finish(store, "old", 10, "failed")  # a failed run may be retried
    assert await store.reopen_handler("old", run_id="run-old", ctx=None, at=at(50))
    await finish(store, "new", 60)
    await finish(store, "newer", 70)

    assert sorted(await ids(store)) == ["newer", "old"]  # "old" runs again: never evicted


def test_a_query_s_filters_all_apply_and_rows_go_oldest_first() -> None:
    rows = [
        handler("b", started_at=at(1), principal="alice", version="1"),
        handler("a", started_at=at(1), principal="alice", version="2"),
        handler("c", started_at=at(0), principal="bob", status="failed"),
        handler("d", workflow_name="other", principal="alice"),
    ]
    alice = HandlerQuery(principal_in=["alice"], workflow_name_in=["wf"])
    assert [h.handler_id for h in matching(rows, alice)] == ["b", "a"]
    versioned = HandlerQuery(version_in=["2"], status_in=["running"])
    assert [h.handler_id for h in matching(rows, versioned)] == ["a"]
    assert [h.handler_id for h in matching(rows, HandlerQuery(handler_id_in=["c"]))] == ["c"]
    assert [h.handler_id for h in sorted(rows[:3], key=order_key)] == ["c", "a", "b"]

"""``store._memory_rows``: the memory store's rows, the count of finished ones, their eviction."""

from __future__ import annotations

from workflows.events import StopEvent

from llama_workflows_asgi import codec
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


class Done(StopEvent):
    answer: int


async def test_json_written_as_text_reads_back_decoded_wherever_the_row_is_read() -> None:
    store = MemoryWorkflowStore()
    store.result_classes[codec.qualified_name(Done)] = Done
    row = handler("h", owner_id="me", idempotency_key="k")
    await store.create_handler(row)
    await store.save_progress([progress(row, ctx='{"step":1}')])
    (listed,) = await store.query(HandlerQuery(load_ctx=False))
    assert listed.ctx is None  # a listing leaves the checkpoint for a later read
    (claimed,) = await store.claim_handlers(
        "other", now=at(0), lease_until=at(9), dead_owners=["me"]
    )
    assert claimed.ctx == {"step": 1}
    own = row.model_copy(update={"owner_id": "other"})
    result = codec.encode(Done(answer=42)).payload
    end = progress(own, ctx='{"step":2}', status="completed", result=result)
    await store.save_progress([end])
    found = await store.get_by_idempotency_key("k")
    assert found is not None
    assert (found.ctx, found.status) == ({"step": 2}, "completed")
    assert isinstance(found.result, Done)
    assert found.result.answer == 42
    (again,) = await store.query(HandlerQuery())
    assert (again.ctx, again.result) == (found.ctx, found.result)


async def test_a_row_written_whole_keeps_nothing_of_the_text_written_before() -> None:
    store = MemoryWorkflowStore()
    row = handler("h", owner_id="me")
    await store.create_handler(row)
    await store.save_progress([progress(row, ctx='{"old":1}', status="failed", error="e")])
    await store.update(handler("h", status="failed", ctx={"new": 2}))
    (read,) = await store.query(HandlerQuery())
    assert (read.ctx, read.result) == ({"new": 2}, None)
    assert await store.reopen_handler("h", run_id="run-h", ctx=None, at=at(5))
    (reopened,) = await store.query(HandlerQuery())
    assert reopened.ctx is None  # the reopen cleared the checkpoint

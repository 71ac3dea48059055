"""The memory store's own rule: it keeps at most ``max_completed`` finished handlers."""

from __future__ import annotations

from llama_workflows_asgi.store import HandlerQuery, MemoryWorkflowStore
from tests.support.factories import at, event, handler, progress


async def finish(
    store: MemoryWorkflowStore, handler_id: str, seconds: float, status: str = "completed"
) -> None:
    """Create ``handler_id`` and let its owner write its end at ``seconds``."""
    row = handler(handler_id, owner_id="me")
    await store.create_handler(row)
    end = progress(row, status=status, events=[event(0)], updated_at=at(seconds))
    assert await store.save_progress([end]) == set()


async def ids(store: MemoryWorkflowStore) -> list[str]:
    return [h.handler_id for h in await store.query(HandlerQuery())]


async def test_the_oldest_finished_handlers_go_first_and_running_ones_stay() -> None:
    store = MemoryWorkflowStore(max_completed=2)
    await store.create_handler(handler("live", owner_id="me"))
    for i, seconds in enumerate([30, 10, 20, 40]):  # finished out of creation order
        await finish(store, f"f{i}", seconds)

    assert sorted(await ids(store)) == ["f0", "f3", "live"]  # f1 (10 s) and f2 (20 s) dropped
    assert await store.read_events("run-f1") == []  # with their event logs
    assert len(await store.read_events("run-f3")) == 1


async def test_a_reopened_handler_is_no_longer_counted_as_finished() -> None:
    store = MemoryWorkflowStore(max_completed=1)
    await finish(store, "old", 10, "failed")  # a failed run may be retried
    assert await store.reopen_handler("old", run_id="run-old", ctx=None, at=at(50))
    await finish(store, "new", 60)
    await finish(store, "newer", 70)

    assert sorted(await ids(store)) == ["newer", "old"]  # "old" runs again: never evicted


async def test_zero_keeps_no_finished_handler_and_none_keeps_all() -> None:
    none_kept, all_kept = MemoryWorkflowStore(max_completed=0), MemoryWorkflowStore(None)
    for store in (none_kept, all_kept):
        for i in range(5):
            await finish(store, f"f{i}", i)

    assert await ids(none_kept) == []
    assert len(await ids(all_kept)) == 5

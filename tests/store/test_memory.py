"""``store.memory``: what the in-process store does beyond the shared contract.

The contract itself (the same behaviour as the SQL stores) is ``test_contract.py``.
"""

from __future__ import annotations

import pytest

from llama_workflows_asgi.store import HandlerQuery, MemoryWorkflowStore
from llama_workflows_asgi.store.liveness import LocalLiveness
from tests.support.factories import T0, at, event, handler, progress


async def ids(store: MemoryWorkflowStore) -> list[str]:
    return [h.handler_id for h in await store.query(HandlerQuery())]


def test_it_says_it_forgets_everything_and_refuses_a_negative_bound() -> None:
    store = MemoryWorkflowStore()
    assert store.durable is False
    assert store.max_completed == 1000
    assert isinstance(store.liveness, LocalLiveness)
    with pytest.raises(ValueError, match="max_completed"):
        MemoryWorkflowStore(max_completed=-1)


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


async def test_readers_get_copies_the_store_does_not_share() -> None:
    store = MemoryWorkflowStore()
    given = handler("h", ctx={"n": 1})
    await store.create_handler(given)
    given.status = "failed"
    (read,) = await store.query(HandlerQuery())
    read.principal = "mallory"
    assert read.status == "running"
    (again,) = await store.query(HandlerQuery())
    assert again.principal is None
    assert again.ctx == {"n": 1}
    (listed,) = await store.query(HandlerQuery(load_ctx=False))
    assert listed.ctx is None
    assert (await store.query(HandlerQuery()))[0].ctx == {"n": 1}


async def test_inbox_ids_count_up_across_handlers() -> None:
    store = MemoryWorkflowStore()
    await store.create_handler(handler("a"))
    await store.create_handler(handler("b"))
    first = await store.enqueue_event("a", "run-a", "{}", None, T0)
    second = await store.enqueue_event("b", "run-b", "{}", "step", T0)
    third = await store.enqueue_event("a", "run-a", "{}", None, T0)
    assert (first, second, third) == (1, 2, 3)
    assert [e.id for e in await store.read_inbox(["a", "b"])] == [1, 2, 3]
    assert [e.id for e in await store.read_inbox(["b"])] == [2]


async def test_an_owner_row_lapses_only_once_its_runs_are_gone() -> None:
    store = MemoryWorkflowStore()
    await store.heartbeat("crashed", now=T0, expires_at=at(1))
    await store.heartbeat("idle", now=T0, expires_at=at(1))
    await store.create_handler(handler("h", owner_id="crashed"))
    await store.heartbeat("me", now=at(10), expires_at=at(60))
    assert await store.list_owners() == {"crashed", "me"}
    (claimed,) = await store.claim_handlers("me", now=at(10), lease_until=at(60))
    assert (claimed.previous_owner_id, claimed.resume_attempts) == ("crashed", 1)
    await store.heartbeat("me", now=at(11), expires_at=at(60))
    assert await store.list_owners() == {"me"}
    await store.release_handlers("me", None)
    assert await store.list_owners() == set()
    assert (await store.query(HandlerQuery()))[0].owner_id is None


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

"""``store.memory``: what the in-process store does beyond the shared contract.

The contract itself (the same behaviour as the SQL stores) is ``test_contract.py``;
its rows and their eviction are ``test_memory_rows.py``, its ownership
``test_memory_owners.py``.
"""

from __future__ import annotations

import pytest

from llama_workflows_asgi.store import HandlerQuery, MemoryWorkflowStore
from llama_workflows_asgi.store.liveness import LocalLiveness
from tests.support.factories import T0, handler


def test_it_says_it_forgets_everything_and_refuses_a_negative_bound() -> None:
    store = MemoryWorkflowStore()
    assert store.durable is False
    assert store.max_completed == 1000
    assert isinstance(store.liveness, LocalLiveness)
    with pytest.raises(ValueError, match="max_completed"):
        MemoryWorkflowStore(max_completed=-1)


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

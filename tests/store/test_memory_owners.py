"""``store._memory_owners``: heartbeats, claims and releases in the memory store."""

from __future__ import annotations

from llama_workflows_asgi.store import HandlerQuery, MemoryWorkflowStore
from tests.support.factories import T0, at, handler


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


async def test_a_claim_takes_served_versions_and_idle_runs_only_with_an_event_waiting() -> None:
    store = MemoryWorkflowStore()
    await store.create_handler(handler("v1", version="1"))
    await store.create_handler(handler("v2", version="2"))
    await store.create_handler(handler("plain"))
    await store.create_handler(handler("idle", idle_since=T0))
    await store.create_handler(handler("done", status="completed"))
    served = {"wf": ["1"]}

    first = await store.claim_handlers("me", now=T0, lease_until=at(30), versions=served)
    assert sorted(h.handler_id for h in first) == ["plain", "v1"]
    assert await store.enqueue_event("idle", "run-idle", "{}", None, T0) is not None
    second = await store.claim_handlers("you", now=T0, lease_until=at(30), versions=served)
    assert [h.handler_id for h in second] == ["idle"]  # its event waits; the rest are owned
    assert await store.list_owners() == {"me", "you"}

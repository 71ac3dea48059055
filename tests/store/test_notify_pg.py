"""``store._notify_pg``: wakeups through ``LISTEN/NOTIFY`` on a real PostgreSQL.

Each write sends its wakeup in its own transaction; the listening connection,
once terminated by the server, comes back and tells its listeners to look at
everything once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection

import asyncpg  # type: ignore[import-untyped]
import pytest

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._notify_pg import PostgresNotifications
from llama_workflows_asgi.store.notifications import Notice
from tests.support.factories import LEASE, at, event, handler, progress

OWNER = "owner-1"
Heard = tuple[Notice, list[str]]


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlAlchemyWorkflowStore]:
    store = SqlAlchemyWorkflowStore(postgres_url)
    await store.start()
    await store.create_handler(handler("a", owner_id=OWNER, lease_expires_at=LEASE))
    yield store
    await store.close()


async def listening(store: SqlAlchemyWorkflowStore) -> asyncio.Queue[Heard]:
    heard: asyncio.Queue[Heard] = asyncio.Queue()

    def listener(notice: Notice, keys: Collection[str]) -> None:
        heard.put_nowait((notice, sorted(keys)))

    hub = store.notifications
    assert isinstance(hub, PostgresNotifications)
    hub.subscribe(listener)
    await hub.start()
    await asyncio.wait_for(hub.connected.wait(), 10)
    return heard


async def next_heard(heard: asyncio.Queue[Heard]) -> Heard:
    return await asyncio.wait_for(heard.get(), 10)


async def test_each_write_wakes_its_topic_once_committed(store: SqlAlchemyWorkflowStore) -> None:
    heard = await listening(store)
    assert await store.enqueue_event("a", "another-run", "{}", None, at(1)) is None
    assert await store.enqueue_event("a", "run-a", "{}", None, at(1)) is not None
    assert await next_heard(heard) == ("wake", ["a"])  # nothing for the refused one
    h = handler("a", owner_id=OWNER)
    await store.save_progress([progress(h, events=[event(0)])])
    assert await next_heard(heard) == ("events", ["run-a"])
    await store.release_handlers(OWNER, ["a"])
    assert await next_heard(heard) == ("free", ["a"])
    assert await store.finalize_handler(
        "a", status="cancelled", error=None, event=event(1, terminal=True), at=at(2)
    )
    assert sorted([await next_heard(heard), await next_heard(heard)]) == [
        ("events", ["run-a"]),
        ("wake", ["a"]),
    ]


async def test_a_terminated_listening_connection_comes_back_and_wakes_everything(
    store: SqlAlchemyWorkflowStore, postgres_url: str
) -> None:
    heard = await listening(store)
    hub = store.notifications
    assert isinstance(hub, PostgresNotifications)
    old = await hub.backend_pid()
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", old)
    finally:
        await admin.close()
    assert await next_heard(heard) == ("all", [])  # wakeups may have been missed
    assert hub.reconnects == 1
    assert await hub.backend_pid() not in (None, old)
    assert await store.enqueue_event("a", "run-a", "{}", None, at(1)) is not None
    assert await next_heard(heard) == ("wake", ["a"])

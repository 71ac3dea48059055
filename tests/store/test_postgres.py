"""PostgreSQL specifics: outages and restarts, a host's engine, group commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store import HandlerQuery, SqlAlchemyWorkflowStore
from tests.support.factories import event as stored_event
from tests.support.factories import handler, progress
from tests.support.postgres import PostgresServer


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[SqlAlchemyWorkflowStore]:
    store = SqlAlchemyWorkflowStore(postgres_url)
    assert not store.migrate  # PostgreSQL: migrations belong to the deployment
    await store.start()
    yield store
    await store.close()


async def test_outage_is_unavailable_and_the_store_recovers(
    store: SqlAlchemyWorkflowStore, postgres_server: PostgresServer
) -> None:
    await store.create_handler(handler("before"))
    await asyncio.to_thread(postgres_server.stop)
    try:
        for attempt in (
            store.query(HandlerQuery()),
            store.create_handler(handler("during")),
            store.ping(),
        ):
            with pytest.raises(StoreUnavailableError, match="cannot reach the database") as caught:
                await attempt
            assert caught.value.retry_after >= 1
    finally:
        await asyncio.to_thread(postgres_server.start)
    # Pooled connections died with the server; pre-ping replaces them.
    await store.ping()
    await store.create_handler(handler("after"))
    assert [h.handler_id for h in await store.query(HandlerQuery())] == ["after", "before"]


async def test_host_engine_is_shared_not_disposed(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    store = SqlAlchemyWorkflowStore(engine)
    await store.start()
    assert store.write_engine is engine
    await store.create_handler(handler("h"))
    await store.close()
    async with engine.connect() as conn:  # the host's pool is still there
        assert await conn.scalar(text("SELECT count(*) FROM workflow_handlers")) == 1
    await engine.dispose()


async def test_group_commit_batches_concurrent_writes(store: SqlAlchemyWorkflowStore) -> None:
    rows = [handler(f"h{i}", owner_id="o") for i in range(30)]
    for h in rows:
        await store.create_handler(h)
    commits: list[int] = []
    event.listen(store.write_engine.sync_engine, "commit", lambda conn: commits.append(1))
    before = store.commits
    results = await asyncio.gather(
        *(store.save_progress([progress(h, events=[stored_event(0)])]) for h in rows)
    )
    assert results == [set()] * 30
    assert 1 <= len(commits) == store.commits - before < 10

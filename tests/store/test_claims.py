"""Claims for capacity and versions: oldest first, at most ``limit``, only served versions.

Every store (memory, SQLite, PostgreSQL) answers the same.
"""

from __future__ import annotations

from datetime import timedelta

from llama_workflows_asgi.store import AbstractWorkflowStore, HandlerQuery, PersistentHandler
from llama_workflows_asgi.store.base import utcnow

BASE = utcnow()


def row(
    handler_id: str, minute: int, *, name: str = "wf", version: str | None = "v1", **extra: object
) -> PersistentHandler:
    return PersistentHandler(
        handler_id=handler_id,
        workflow_name=name,
        status="running",
        run_id=f"run-{handler_id}",
        started_at=BASE + timedelta(minutes=minute),
        version=version,
        **extra,  # type: ignore[arg-type]
    )


async def claim(
    store: AbstractWorkflowStore, limit: int, versions: dict[str, list[str]] | None
) -> list[str]:
    now = utcnow()
    rows = await store.claim_handlers(
        "me", now=now, lease_until=now + timedelta(seconds=30), limit=limit, versions=versions
    )
    return [r.handler_id for r in rows]


async def test_claims_go_oldest_first_up_to_the_limit(store: AbstractWorkflowStore) -> None:
    for handler_id, minute in (("c", 3), ("a", 1), ("d", 4), ("b", 2)):
        await store.create_handler(row(handler_id, minute))
    assert await claim(store, 2, {"wf": ["v1"]}) == ["a", "b"]
    assert await claim(store, 5, {"wf": ["v1"]}) == ["c", "d"]
    assert await claim(store, 5, {"wf": ["v1"]}) == []


async def test_claims_take_only_served_versions_and_unversioned_rows(
    store: AbstractWorkflowStore,
) -> None:
    await store.create_handler(row("old", 1, version=None))
    await store.create_handler(row("one", 2, version="v1"))
    await store.create_handler(row("two", 3, version="v2"))
    await store.create_handler(row("other", 4, name="elsewhere", version=None))
    assert await claim(store, 10, {"wf": ["v2"]}) == ["old", "two"]
    assert await claim(store, 10, {"nothing": ["v1"]}) == []
    assert await claim(store, 10, {}) == []
    assert await claim(store, 10, {"wf": ["v1", "v3"]}) == ["one"]
    assert await claim(store, 10, None) == ["other"]  # no filter: anything claimable


async def test_listing_filters_by_version(store: AbstractWorkflowStore) -> None:
    await store.create_handler(row("old", 1, version=None))
    await store.create_handler(row("one", 2, version="v1"))
    await store.create_handler(row("two", 3, version="v2"))

    async def ids(versions: list[str | None]) -> list[str]:
        return [h.handler_id for h in await store.query(HandlerQuery(version_in=versions))]

    assert await ids(["v2", "v1"]) == ["one", "two"]
    assert await ids([None]) == ["old"]
    assert await ids([]) == []
    (stored,) = await store.query(HandlerQuery(handler_id_in=["two"]))
    assert stored.version == "v2"


async def test_queued_counts_unowned_running_rows_not_idle_by_workflow(
    store: AbstractWorkflowStore,
) -> None:
    lease = BASE + timedelta(hours=1)
    await store.create_handler(row("q1", 1))
    await store.create_handler(row("q2", 2, name="other"))
    await store.create_handler(row("q3", 3))
    await store.create_handler(row("owned", 4, owner_id="x", lease_expires_at=lease))
    await store.create_handler(row("idle", 5, idle_since=BASE))
    done = row("done", 6).model_copy(update={"status": "completed", "completed_at": BASE})
    await store.create_handler(done)
    assert await store.count_queued() == {"wf": 2, "other": 1}
    await claim(store, 1, {"wf": ["v1"]})
    assert await store.count_queued() == {"wf": 1, "other": 1}

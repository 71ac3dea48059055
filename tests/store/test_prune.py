"""The store contract for retention and retry: ``prune`` and ``reopen_handler``.

``store`` runs each test against memory, SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from llama_workflows_asgi.store import (
    AbstractWorkflowStore,
    HandlerQuery,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
    Status,
)
from llama_workflows_asgi.store._prune import PRUNE_LOCK_KEY
from tests.store.test_contract import get, ids, orphans
from tests.support.factories import LEASE, T0, at, event, handler, progress

DAY = 86400.0


async def finished(
    store: AbstractWorkflowStore, handler_id: str, status: Status, ended: float, events: int = 3
) -> PersistentHandler:
    """A run that wrote ``events`` events and finished with ``status`` at ``at(ended)``."""
    h = handler(handler_id, owner_id="o")
    await store.create_handler(h)
    log = [event(i, terminal=i == events - 1) for i in range(events)]
    assert not await store.save_progress(
        [progress(h, events=log, status=status, updated_at=at(ended), error="boom")]
    )
    return h


async def test_prune_deletes_old_finished_runs_with_their_events(
    store: AbstractWorkflowStore,
) -> None:
    for name, status, ended in [
        ("old-done", "completed", 1),
        ("old-failed", "failed", 2),
        ("old-cancelled", "cancelled", 3),
        ("new-done", "completed", 10 * DAY),
    ]:
        await finished(store, name, status, ended)  # type: ignore[arg-type]
    await store.create_handler(handler("old-running", started_at=T0, updated_at=at(0)))
    # Finished rows written without completed_at age by updated_at, then started_at.
    await store.create_handler(handler("bare", status="completed", updated_at=at(4)))
    cutoff = at(DAY)

    assert await store.prune(older_than=cutoff, dry_run=True) == 4
    assert len(await ids(store)) == 6
    assert await store.prune(older_than=cutoff) == 4
    assert await ids(store) == ["new-done", "old-running"]
    assert await store.read_events("run-old-done") == []
    assert len(await store.read_events("run-new-done")) == 3
    assert await orphans(store) == (0, 0)
    assert await store.prune(older_than=cutoff) == 0


async def test_prune_by_status_and_age(store: AbstractWorkflowStore) -> None:
    await finished(store, "done", "completed", 1)
    await finished(store, "failed", "failed", 1)
    assert await store.prune(older_than=at(DAY), statuses=["failed"]) == 1
    assert await ids(store) == ["done"]
    # An age is counted back from now: a run finished in 2024 is older than a day.
    assert await store.prune(older_than=timedelta(days=1), statuses=["completed"]) == 1
    assert await ids(store) == []


async def test_prune_goes_in_batches(store: AbstractWorkflowStore) -> None:
    for i in range(7):
        await finished(store, f"h{i}", "completed", i)
    assert await store.prune(older_than=at(DAY), batch_size=3) == 7
    assert await ids(store) == []
    assert await orphans(store) == (0, 0)


async def test_prune_never_takes_running_runs(store: AbstractWorkflowStore) -> None:
    with pytest.raises(ValueError, match="running"):
        await store.prune(older_than=at(DAY), statuses=["running"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timezone"):
        await store.prune(older_than=at(DAY).replace(tzinfo=None))


async def test_reopen_puts_a_failed_run_back_unowned(store: AbstractWorkflowStore) -> None:
    h = await finished(store, "h", "failed", 5)
    checkpoint = {"is_running": True, "state": {"tries": 1}}
    assert await store.reopen_handler("h", run_id="run-other", ctx=checkpoint, at=at(9)) is False
    assert await store.reopen_handler("h", run_id="run-h", ctx=checkpoint, at=at(9)) is True
    row = await get(store, "h")
    assert row is not None
    assert (row.status, row.error, row.completed_at, row.owner_id) == ("running", None, None, None)
    assert (row.ctx, row.updated_at, row.resume_attempts) == (checkpoint, at(9), 0)
    assert [e.terminal for e in await store.read_events("run-h")] == [False, False, False]
    # Running again: not reopened twice, claimable, and its log goes on.
    assert await store.reopen_handler("h", run_id="run-h", ctx=None, at=at(10)) is False
    claimed = await store.claim_handlers("me", now=T0, lease_until=LEASE)
    assert [c.handler_id for c in claimed] == ["h"]
    mine = h.model_copy(update={"owner_id": "me"})
    assert not await store.save_progress([progress(mine, events=[event(3, terminal=True)])])
    assert [e.sequence for e in await store.read_events("run-h")] == [0, 1, 2, 3]


async def test_only_failed_runs_reopen(store: AbstractWorkflowStore) -> None:
    await finished(store, "done", "completed", 1)
    await finished(store, "cancelled", "cancelled", 1)
    await store.create_handler(handler("running"))
    for name in ["done", "cancelled", "running", "missing"]:
        assert not await store.reopen_handler(name, run_id=f"run-{name}", ctx=None, at=at(9))
    statuses = {h.handler_id: h.status for h in await store.query(HandlerQuery())}
    assert statuses == {"done": "completed", "cancelled": "cancelled", "running": "running"}


async def test_exclusive_prune_gives_way_to_another_pruner(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await finished(sql_store, "h", "completed", 1)
    if sql_store.url.get_backend_name() != "postgresql":
        # SQLite: the write lock serializes pruners; an exclusive prune just runs.
        assert await sql_store.prune(older_than=at(DAY), exclusive=True) == 1
        return
    async with sql_store.read_engine.connect() as other:
        await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PRUNE_LOCK_KEY})
        assert await sql_store.prune(older_than=at(DAY), exclusive=True) == 0
        assert await ids(sql_store) == ["h"]
        await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNE_LOCK_KEY})
    assert await sql_store.prune(older_than=at(DAY), exclusive=True) == 1

"""``store._reads``: the SQL store's reads, on SQLite files and a real PostgreSQL.

Through the store's methods, and directly on one of its read connections.
"""

from __future__ import annotations

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store import _reads as reads
from tests.support.factories import T0, at, event, handler, progress


async def test_reads_of_many_runs_answer_each_run_once(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    for name, count in [("a", 3), ("b", 2), ("c", 1)]:
        row = handler(name, owner_id="me")
        await sql_store.create_handler(row)
        await sql_store.save_progress([progress(row, events=[event(i) for i in range(count)])])
        await sql_store.enqueue_event(name, f"run-{name}", "{}", None, T0)
    positions = {"run-a": 0, "run-b": 1, "run-c": -1, "run-none": -1}
    found = await sql_store.read_new_events(positions, limit=10)
    assert {run: [e.sequence for e in log] for run, log in found.items()} == {
        "run-a": [1, 2],
        "run-c": [0],
    }
    capped = await sql_store.read_new_events({"run-a": -1, "run-b": -1}, limit=4)
    assert sum(len(log) for log in capped.values()) == 4
    assert await sql_store.read_new_events({}) == {}
    # More ids than one statement binds: read in chunks, answered once per id.
    many = [f"run-x{i}" for i in range(1500)] + ["run-b", "run-b"]
    assert await sql_store.last_sequences(many) == {"run-b": 1}
    inbox = await sql_store.read_inbox([f"x{i}" for i in range(1500)] + ["c", "a", "c"])
    assert [e.handler_id for e in inbox] == ["a", "c"]
    assert await sql_store.read_inbox([]) == []


async def test_queued_runs_and_owners_read_on_a_connection(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("free"))
    await sql_store.create_handler(handler("other", workflow_name="other"))
    owned = handler("owned", owner_id="me", lease_expires_at=at(30))
    await sql_store.create_handler(owned)
    await sql_store.save_progress([progress(owned, events=[event(i) for i in range(3)])])
    await sql_store.create_handler(handler("idle", idle_since=T0))
    await sql_store.create_handler(handler("done", status="completed"))
    await sql_store.create_handler(handler("keyed", status="completed", idempotency_key="k"))
    await sql_store.heartbeat("me", now=T0, expires_at=at(30))

    async with sql_store.read_engine.connect() as conn:
        assert await reads.queued(conn) == {"wf": 1, "other": 1}
        assert await reads.owners(conn) == {"me"}
        assert [row["handler_id"] for row in await reads.by_idempotency_key(conn, "k")] == ["keyed"]
        assert await reads.by_idempotency_key(conn, "none") == []
        assert [e.sequence for e in await reads.events(conn, "run-owned", 0, 1)] == [1]

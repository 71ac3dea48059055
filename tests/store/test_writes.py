"""``store._writes``: the batch functions, called with several payloads in one real transaction.

Each test hands a batch function the payloads of several jobs at once, as the
group-commit writer does, and checks the outcome of each payload and what the
shared transaction wrote: a payload whose precondition fails is answered with
its error and writes nothing, without aborting its neighbours.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from llama_workflows_asgi.errors import ConflictError
from llama_workflows_asgi.store import (
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
)
from llama_workflows_asgi.store import _ownership as ownership
from llama_workflows_asgi.store import _writes as writes
from tests.store.test_ownership import beat, owner_rows
from tests.support.factories import at, event, handler, progress


async def rows(store: SqlAlchemyWorkflowStore) -> dict[str, PersistentHandler]:
    return {h.handler_id: h for h in await store.query(HandlerQuery())}


async def test_one_batch_creates_rows_and_answers_each_conflict_alone(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("taken"))
    ops = [
        writes.Create(handler("a"), None),
        writes.Create(handler("taken", run_id="run-other"), None),
        writes.Create(handler("b", idempotency_key="k"), None),
        writes.Create(handler("a", run_id="run-a2"), None),  # the batch's own "a"
        writes.Create(handler("c", idempotency_key="k"), None),
        writes.Create(handler("d"), None),
    ]
    async with sql_store.write_engine.begin() as conn:
        outcomes = await writes.create_handler(conn, ops)
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType",
        "HandlerExistsError",
        "NoneType",
        "HandlerExistsError",
        "IdempotencyKeyExistsError",
        "NoneType",
    ]
    stored = await rows(sql_store)
    assert sorted(stored) == ["a", "b", "d", "taken"]
    assert stored["a"].run_id == "run-a"
    assert stored["taken"].run_id == "run-taken"


async def test_a_replacement_needs_the_finished_run_and_drops_its_log(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("done", owner_id="me"))
    await sql_store.save_progress(
        [progress(handler("done", owner_id="me"), events=[event(0)], status="completed")]
    )
    await sql_store.create_handler(handler("busy", idempotency_key="busy-key"))
    ops = [
        writes.Create(handler("done", run_id="run-2", idempotency_key="new-key"), "run-done"),
        writes.Create(handler("busy", run_id="run-3"), "run-busy"),  # still running
        writes.Create(handler("done", run_id="run-4"), "run-done"),  # replaced just before
    ]
    async with sql_store.write_engine.begin() as conn:
        outcomes = await writes.create_handler(conn, ops)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], HandlerExistsError)
    assert isinstance(outcomes[2], HandlerExistsError)
    stored = await rows(sql_store)
    assert (stored["done"].run_id, stored["done"].status) == ("run-2", "running")
    assert await sql_store.read_events("run-done") == []


async def test_a_taken_key_in_a_replacement_is_answered_inside_its_savepoint(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("other", idempotency_key="k"))
    await sql_store.create_handler(handler("done", status="completed"))
    ops = [
        writes.Create(handler("done", run_id="run-2", idempotency_key="k"), "run-done"),
        writes.Create(handler("fresh"), None),
    ]
    async with sql_store.write_engine.begin() as conn:
        outcomes = await writes.create_handler(conn, ops)
        # The transaction is still usable after the refused write.
        assert await conn.scalar(text("SELECT 1")) == 1
    assert isinstance(outcomes[0], IdempotencyKeyExistsError)
    assert outcomes[1] is None
    stored = await rows(sql_store)
    assert stored["done"].run_id == "run-done"
    assert "fresh" in stored


async def test_finalize_enqueue_and_reopen_answer_each_payload(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    mine = handler("h", owner_id="me")
    await sql_store.create_handler(mine)
    await sql_store.save_progress([progress(mine, events=[event(0), event(1)])])
    stop = event(99, event_type="StopEvent", terminal=True)
    async with sql_store.write_engine.begin() as conn:
        queued = await writes.enqueue_event(
            conn,
            [
                writes.Enqueue("h", "run-h", '{"n":1}', None, at(1)),
                writes.Enqueue("h", "run-old", '{"n":2}', None, at(1)),
                writes.Enqueue("nobody", "run-x", "{}", None, at(1)),
            ],
        )
        finalized = await writes.finalize_handler(
            conn,
            [
                writes.Finalize("h", "failed", "boom", stop, at(2)),
                writes.Finalize("h", "cancelled", None, stop, at(3)),  # already finished
            ],
        )
        reopened = await writes.reopen_handler(
            conn,
            [
                writes.Reopen("h", "run-other", None, at(4)),
                writes.Reopen("h", "run-h", '{"ctx":1}', at(4)),
                writes.Reopen("h", "run-h", None, at(5)),  # running again by now
            ],
        )
    assert isinstance(queued[0], int)
    assert queued[1:] == [None, None]
    assert finalized == [True, False]
    assert reopened == [False, True, False]
    log = await sql_store.read_events("run-h")
    assert [(e.sequence, e.terminal) for e in log] == [(0, False), (1, False), (2, False)]
    stored = (await rows(sql_store))["h"]
    assert (stored.status, stored.error, stored.ctx, stored.owner_id) == (
        "running",
        None,
        {"ctx": 1},
        None,
    )
    assert await sql_store.read_inbox(["h"]) == []  # cleared by the finalize


async def test_a_run_written_by_its_owner_extends_the_owners_heartbeat(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    async with sql_store.write_engine.begin() as conn:
        await ownership.heartbeat(conn, [beat("me", expires_in=1)])
        row = handler("h", owner_id="me", lease_expires_at=at(120))
        earlier = handler("g", owner_id="me", lease_expires_at=at(30))
        await writes.create_handler(conn, [writes.Create(row, None), writes.Create(earlier, None)])
        assert (await owner_rows(conn))["me"] == at(120)
        # Never shortened by a row with an earlier lease.
        await writes.create_handler(conn, [writes.Create(handler("f", owner_id="me"), None)])
        assert (await owner_rows(conn))["me"] == at(120)


async def test_upsert_and_delete_answer_per_payload(sql_store: SqlAlchemyWorkflowStore) -> None:
    await sql_store.create_handler(handler("h", idempotency_key="k"))
    await sql_store.save_progress([progress(handler("h"), events=[event(0)])])
    async with sql_store.write_engine.begin() as conn:
        upserted = await writes.upsert_handler(
            conn,
            [
                handler("h", run_id="run-new", status="completed", idempotency_key="k"),
                handler("g", idempotency_key="k"),  # still h's key
                handler("g"),
            ],
        )
        deleted = await writes.delete_handlers(
            conn, [HandlerQuery(status_in=["completed"]), HandlerQuery(handler_id_in=[])]
        )
    assert upserted[0] is None
    assert isinstance(upserted[1], IdempotencyKeyExistsError)
    assert upserted[2] is None
    assert deleted == [1, 0]
    assert sorted(await rows(sql_store)) == ["g"]
    assert await sql_store.read_events("run-h") == []


async def test_one_by_one_answers_a_refused_payload_with_its_error(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    async def double(conn: AsyncConnection, n: int) -> int:
        if n < 0:
            raise ConflictError(f"{n} is negative")
        return int(await conn.scalar(text(f"SELECT {n} * 2")))

    batch = writes.one_by_one(double)
    assert batch.__name__ == "double"
    async with sql_store.write_engine.begin() as conn:
        outcomes = await batch(conn, [1, -1, 3])
        with pytest.raises(ZeroDivisionError):  # anything else is a bug: it propagates
            await writes.one_by_one(lambda c, n: _divide(n))(conn, [0])
    assert outcomes[0] == 2
    assert isinstance(outcomes[1], ConflictError)
    assert outcomes[2] == 6


async def _divide(n: int) -> float:
    return 1 / n

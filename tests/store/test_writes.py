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
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
)
from llama_workflows_asgi.store import _writes as writes
from tests.support.factories import at, event, handler, progress


async def rows(store: SqlAlchemyWorkflowStore) -> dict[str, PersistentHandler]:
    return {h.handler_id: h for h in await store.query(HandlerQuery())}


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

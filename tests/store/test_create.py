"""``store._create``: handler creation and replacement, several payloads in one real transaction.

Each test hands ``create_handler`` the payloads of several jobs at once, as the
group-commit writer does: a payload whose row or key is taken, or whose run to
replace is not finished, is answered with its error and writes nothing,
without aborting its neighbours; the owners of the rows written are vouched for.
"""

from __future__ import annotations

from sqlalchemy import text

from llama_workflows_asgi.store import (
    HandlerExistsError,
    IdempotencyKeyExistsError,
    SqlAlchemyWorkflowStore,
)
from llama_workflows_asgi.store import _create as creating
from llama_workflows_asgi.store import _ownership as ownership
from tests.store.test_ownership import beat, owner_rows
from tests.store.test_writes import rows
from tests.support.factories import at, event, handler, progress


async def test_one_batch_creates_rows_and_answers_each_conflict_alone(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("taken"))
    ops = [
        creating.Create(handler("a"), None),
        creating.Create(handler("taken", run_id="run-other"), None),
        creating.Create(handler("b", idempotency_key="k"), None),
        creating.Create(handler("a", run_id="run-a2"), None),  # the batch's own "a"
        creating.Create(handler("c", idempotency_key="k"), None),
        creating.Create(handler("d"), None),
    ]
    async with sql_store.write_engine.begin() as conn:
        outcomes = await creating.create_handler(conn, ops)
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
        creating.Create(handler("done", run_id="run-2", idempotency_key="new-key"), "run-done"),
        creating.Create(handler("busy", run_id="run-3"), "run-busy"),  # still running
        creating.Create(handler("done", run_id="run-4"), "run-done"),  # replaced just before
    ]
    async with sql_store.write_engine.begin() as conn:
        outcomes = await creating.create_handler(conn, ops)
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
        creating.Create(handler("done", run_id="run-2", idempotency_key="k"), "run-done"),
        creating.Create(handler("fresh"), None),
    ]
    async with sql_store.write_engine.begin() as conn:
        outcomes = await creating.create_handler(conn, ops)
        # The transaction is still usable after the refused write.
        assert await conn.scalar(text("SELECT 1")) == 1
    assert isinstance(outcomes[0], IdempotencyKeyExistsError)
    assert outcomes[1] is None
    stored = await rows(sql_store)
    assert stored["done"].run_id == "run-done"
    assert "fresh" in stored


async def test_a_run_written_by_its_owner_extends_the_owners_heartbeat(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    async with sql_store.write_engine.begin() as conn:
        await ownership.heartbeat(conn, [beat("me", expires_in=1)])
        row = handler("h", owner_id="me", lease_expires_at=at(120))
        earlier = handler("g", owner_id="me", lease_expires_at=at(30))
        await creating.create_handler(
            conn, [creating.Create(row, None), creating.Create(earlier, None)]
        )
        assert (await owner_rows(conn))["me"] == at(120)
        # Never shortened by a row with an earlier lease.
        await creating.create_handler(conn, [creating.Create(handler("f", owner_id="me"), None)])
        assert (await owner_rows(conn))["me"] == at(120)

"""``store._progress_sql``: rows read back for what decides, written back with what changed.

On both SQL dialects: the lock reads the deciding columns of the rows that
exist, and an UPDATE names only the columns its rows' items set, one
statement per set of columns, leaving every other column as it was.
"""

from __future__ import annotations

from sqlalchemy import event

from llama_workflows_asgi.store import HandlerQuery, SqlAlchemyWorkflowStore
from llama_workflows_asgi.store import _progress_sql as sql
from tests.support.factories import at, handler


async def test_the_lock_reads_the_deciding_columns_of_existing_rows(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("a", owner_id="me"))
    await sql_store.create_handler(handler("b", status="completed", owner_id=None))
    async with sql_store.write_engine.begin() as conn:
        rows = await sql.lock(conn, ["b", "missing", "a"])
    assert sorted(rows) == [
        ("a", {"status": "running", "run_id": "run-a", "owner_id": "me"}),
        ("b", {"status": "completed", "run_id": "run-b", "owner_id": None}),
    ]


async def test_each_row_gets_only_its_columns_in_one_statement_per_shape(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    for name in ("a", "b", "c"):
        await sql_store.create_handler(
            handler(name, owner_id="me", ctx={"kept": name}, error="old")
        )
    updates: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if statement.startswith("UPDATE workflow_handlers"):
            updates.append(statement)

    event.listen(sql_store.write_engine.sync_engine, "before_cursor_execute", seen)
    async with sql_store.write_engine.begin() as conn:
        await sql.update_rows(
            conn,
            {
                "a": {"updated_at": at(1), "idle_since": at(1)},
                "b": {"updated_at": at(2), "idle_since": None},
                "c": {"updated_at": at(3), "status": "cancelled", "owner_id": None},
            },
        )
    assert len(updates) == 2
    rows = {h.handler_id: h for h in await sql_store.query(HandlerQuery(load_ctx=True))}
    assert [rows[n].updated_at for n in "abc"] == [at(1), at(2), at(3)]
    assert (rows["a"].idle_since, rows["b"].idle_since) == (at(1), None)
    assert [(rows[n].status, rows[n].owner_id) for n in "ab"] == [("running", "me")] * 2
    assert (rows["c"].status, rows["c"].owner_id) == ("cancelled", None)
    # Columns nobody set stay as they were: the checkpoint, the error.
    assert [(rows[n].ctx, rows[n].error) for n in "abc"] == [({"kept": n}, "old") for n in "abc"]

"""``store._pg_bulk``: one statement for many rows or ids, arrays on PostgreSQL, lists on SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._pg_bulk import BulkInsert, by_dialect
from llama_workflows_asgi.store.schema import events_table as events

_SAO_PAULO = timezone(timedelta(hours=-3))
_KEY = (events.c.run_id, events.c.sequence)


def event_row(run_id: str, sequence: int, at: datetime) -> dict[str, object]:
    return {
        "run_id": run_id,
        "sequence": sequence,
        "event_type": "Tick",
        "internal": False,
        "terminal": sequence == 2,
        "payload": f'{{"i": {sequence}}}',
        "created_at": at,
    }


async def test_rows_are_written_at_once_and_conflicting_ones_skipped(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=_SAO_PAULO)
    insert = BulkInsert(events, conflict=_KEY, returning=_KEY)
    async with sql_store.write_engine.begin() as conn:
        first = await insert.execute(conn, [event_row("r", 0, at), event_row("r", 1, at)])
        assert sorted(first.all()) == [("r", 0), ("r", 1)]
        again = await insert.execute(conn, [event_row("r", 1, at), event_row("r", 2, at)])
        assert again.all() == [("r", 2)]  # sequence 1 was taken: skipped, not failed
    stored = await sql_store.read_events("r")
    assert [(e.sequence, e.payload, e.terminal) for e in stored] == [
        (0, '{"i": 0}', False),
        (1, '{"i": 1}', False),
        (2, '{"i": 2}', True),
    ]
    assert {e.created_at for e in stored} == {at.astimezone(timezone.utc)}


async def test_ids_match_as_one_list_whatever_their_number(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    runs = [f"run-{i}" for i in range(5)]
    chosen = by_dialect(
        lambda ids: select(events.c.run_id).where(ids(events.c.run_id)).order_by(events.c.run_id)
    )
    async with sql_store.write_engine.begin() as conn:
        await BulkInsert(events).execute(conn, [event_row(run, 0, at) for run in runs])
        statement = chosen[conn.dialect.name]
        for wanted in (runs[:1], runs[1:4], ["nobody"], []):
            found = (await conn.scalars(statement, {"ids": wanted})).all()
            assert found == [run for run in runs if run in wanted]


@pytest.mark.parametrize("sql_store", ["postgres"], indirect=True)  # SQLite has no lengths
async def test_a_value_too_long_for_its_column_is_refused_not_cut(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    # The arrays are cast explicitly, and PostgreSQL cuts a value cast to
    # varchar(n) without a word: the rows must be refused as a plain INSERT is.
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    long = {**event_row("r", 0, at), "event_type": "L" * 300}
    with pytest.raises(DBAPIError, match="value too long"):
        async with sql_store.write_engine.begin() as conn:
            await BulkInsert(events).execute(conn, [event_row("r", 1, at), long])
    assert await sql_store.read_events("r") == []

"""``store._rows``: dataclasses to column values and back, through real tables."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from workflows.events import StopEvent

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._rows import (
    dump_json,
    event_from_row,
    event_values,
    handler_from_row,
    handler_values,
    inbox_from_row,
    load_json,
)
from llama_workflows_asgi.store.schema import events_table, handlers_table, inbox_table
from tests.support.factories import LEASE, T0, at, event, handler


class Answer(StopEvent):
    answer: str


def test_json_columns_are_compact_and_null_stays_null() -> None:
    assert dump_json({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'
    assert dump_json(None) is None
    assert load_json(None) is None
    assert load_json('{"a":[1,2]}') == {"a": [1, 2]}


@pytest.mark.parametrize("text", ["[1,2]", '"a"', "3", "null"])
def test_only_objects_are_read_back(text: str) -> None:
    with pytest.raises(ValueError, match="not an object"):
        load_json(text)


def test_unreadable_text_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Expecting property name"):
        load_json("{not json")


def test_handler_values_name_every_stored_column() -> None:
    row = handler("h", ctx={"state": 1}, start_event={"x": 1}, previous_owner_id="gone")
    values = handler_values(row)
    assert set(values) == {col.name for col in handlers_table.c}
    assert "previous_owner_id" not in values  # bookkeeping of a claim, never stored
    assert values["ctx"] == '{"state":1}'
    assert values["start_event"] == '{"x":1}'
    assert values["result"] is None


def test_a_result_is_stored_as_its_envelope_and_rebuilt_as_its_class() -> None:
    row = handler("h", status="completed", result=Answer(answer="42"))
    values = handler_values(row)
    stored = load_json(values["result"])
    assert stored is not None
    assert stored["value"] == {"answer": "42"}
    classes = {stored["qualified_name"]: Answer}
    back = handler_from_row(values, classes)
    assert isinstance(back.result, Answer)
    assert back.result.answer == "42"
    # Without the class the fields come back in a plain StopEvent.
    plain = handler_from_row(values)
    assert type(plain.result) is StopEvent
    assert plain.result_envelope() == stored


async def test_a_handler_row_round_trips_through_the_table(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    row = handler(
        "h",
        ctx={"nested": {"list": [1, None, "ü"]}},
        start_event={"topic": "t"},
        principal="alice",
        owner_id="o",
        lease_expires_at=LEASE,
        updated_at=at(3),
        idle_since=at(4),
        resume_attempts=2,
        idempotency_key="k",
        request_hash="rh",
        version="v1",
    )
    async with sql_store.write_engine.begin() as conn:
        await conn.execute(insert(handlers_table).values(handler_values(row)))
    async with sql_store.read_engine.connect() as conn:
        stored = (await conn.execute(select(handlers_table))).mappings().one()
        without_ctx = (
            (await conn.execute(select(*(c for c in handlers_table.c if c.name != "ctx"))))
            .mappings()
            .one()
        )
    assert handler_from_row(stored) == row
    # A listing that did not load the checkpoint reads it as None.
    assert handler_from_row(without_ctx) == row.model_copy(update={"ctx": None})


async def test_events_and_inbox_entries_round_trip_through_their_tables(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    stored_events = [event(0, internal=True), event(1, terminal=True, event_type="StopEvent")]
    async with sql_store.write_engine.begin() as conn:
        await conn.execute(insert(events_table), [event_values("run-1", e) for e in stored_events])
        await conn.execute(
            insert(inbox_table).values(
                handler_id="h", run_id="run-1", payload='{"n":1}', step="ask", created_at=T0
            )
        )
    async with sql_store.read_engine.connect() as conn:
        rows = (await conn.execute(select(events_table).order_by("sequence"))).mappings().all()
        entry = (await conn.execute(select(inbox_table))).mappings().one()
    assert [event_from_row(r) for r in rows] == stored_events
    assert {r["run_id"] for r in rows} == {"run-1"}
    inbox = inbox_from_row(entry)
    assert (inbox.handler_id, inbox.run_id, inbox.payload, inbox.step) == (
        "h",
        "run-1",
        '{"n":1}',
        "ask",
    )
    assert inbox.id >= 1
    assert inbox.created_at == T0
    assert inbox.created_at.utcoffset() == timedelta(0)

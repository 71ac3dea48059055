"""``store._driver_sql``: rows sent to the driver as they are are stored as SQLAlchemy stores them.

The reference is SQLAlchemy itself: the same new rows, transitions and events
written through its constructs (bind processors and all) to twin rows must
leave the very same text, numbers and NULLs in the file (SQLite), or the same
values in the table (PostgreSQL on asyncpg, events as arrays).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from llama_workflows_asgi.store import (
    PersistentHandler,
    RunProgress,
    SqlAlchemyWorkflowStore,
    state,
)
from llama_workflows_asgi.store import _progress as progress_
from llama_workflows_asgi.store._create import _CREATE
from llama_workflows_asgi.store._driver_sql import EVENT_COLUMNS, sqlite_timestamp
from llama_workflows_asgi.store._progress_sql import _EVENTS
from llama_workflows_asgi.store._rows import event_values, handler_values
from llama_workflows_asgi.store.schema import UtcDateTime, events_table, handlers_table
from tests.support.factories import T0, at, handler, progress
from tests.support.factories import event as stored_event

TWINS = ("a", "b", "c", "d")
LONG = 300  # events: blocks of many rows per statement, and the rest


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlAlchemyWorkflowStore]:
    store = SqlAlchemyWorkflowStore(f"sqlite:///{tmp_path / 'rows.db'}")
    await store.start()
    yield store
    await store.close()


@pytest.mark.parametrize(
    "value",
    [
        T0,
        T0.replace(microsecond=0),
        T0.astimezone(timezone(timedelta(hours=-7, minutes=-30))),
        T0.replace(tzinfo=None),
        datetime(7, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    ],
)
def test_timestamps_are_the_text_sqlalchemy_binds(value: datetime) -> None:
    bind = UtcDateTime()._cached_bind_processor(sqlite.dialect())
    assert bind is not None
    assert sqlite_timestamp(value) == bind(value)


_OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-1439, 1439))
_TIMESTAMPS = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 30),
    timezones=st.none() | st.just(timezone.utc) | _OFFSETS,
)


@given(st.lists(_TIMESTAMPS, min_size=1, max_size=20))
def test_any_timestamps_in_any_order_are_the_text_sqlalchemy_binds(
    values: list[datetime],
) -> None:
    # The minute's text is kept from one call to the next: it must never leak into another's.
    bind = UtcDateTime()._cached_bind_processor(sqlite.dialect())
    assert bind is not None
    for value in values + [v + timedelta(seconds=61) for v in values] + values[::-1]:
        assert sqlite_timestamp(value) == bind(value)


def twin(prefix: str, name: str) -> PersistentHandler:
    """A new run's row with every column filled in."""
    return handler(
        f"{prefix}{name}",
        owner_id="me",
        lease_expires_at=at(300),
        principal="p",
        version="1",
        start_event={"text": "hi"},
        idempotency_key=f"{prefix}{name}",
        request_hash="abc",
    )


def items(prefix: str) -> list[RunProgress]:
    """Progress of four runs, one of each kind of row change; the first a long write."""
    a, b, c, d = (handler(f"{prefix}{name}", owner_id="me") for name in TWINS)
    long = [stored_event(n, internal=n % 3 == 0) for n in range(LONG)]
    return [
        progress(a, ctx='{"step":1}', events=long),
        progress(b, idle_since=at(5), release=True, reset_attempts=True),
        progress(c, status="completed", result='{"value":1}', events=[stored_event(0)]),
        progress(d, status="failed", error="boom", events=[stored_event(0, terminal=True)]),
    ]


async def write_with_sqlalchemy(conn: AsyncConnection, batch: list[RunProgress]) -> None:
    """The reference: each item's transition and events through SQLAlchemy's constructs."""
    for item in batch:
        sets = dict(state.progress(item).sets)
        where = handlers_table.c.handler_id == item.handler_id
        await conn.execute(update(handlers_table).where(where).values(sets))
        rows = [event_values(item.run_id, e) for e in item.events]
        if rows:
            await _EVENTS.execute(conn, rows)


async def raw(store: SqlAlchemyWorkflowStore, sql: str) -> list[tuple[Any, ...]]:
    async with store.read_engine.connect() as conn:
        return [tuple(row) for row in await conn.exec_driver_sql(sql)]


async def test_created_and_progressed_rows_are_stored_as_sqlalchemy_stores_them(
    store: SqlAlchemyWorkflowStore,
) -> None:
    for name in TWINS:
        await store.create_handler(twin("fast-", name))
    async with store.write_engine.begin() as conn:
        await _CREATE.execute(conn, [handler_values(twin("ref-", n)) for n in TWINS])
    statements: list[str] = []
    event.listen(
        store.write_engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2])
    )
    assert await store.save_progress(items("fast-")) == set()
    async with store.write_engine.begin() as conn:
        await write_with_sqlalchemy(conn, items("ref-"))
    # The driver's statements were announced to the engine like any other.
    assert any(s.startswith("INSERT INTO workflow_events") for s in statements)
    columns = ", ".join(col.name for col in handlers_table.c if col.name != "handler_id")
    handler_rows = await raw(store, f"SELECT handler_id, {columns} FROM workflow_handlers")
    event_rows = await raw(store, f"SELECT * FROM {events_table.name}")
    assert len(event_rows) == 2 * (LONG + 2)
    assert by_twin(handler_rows, "fast-") == by_twin(handler_rows, "ref-")
    assert by_twin(event_rows, "run-fast-") == by_twin(event_rows, "run-ref-")


def by_twin(rows: list[tuple[Any, ...]], prefix: str) -> list[tuple[Any, ...]]:
    """``rows`` whose first column starts with ``prefix``, with the prefix (and run ids) cut."""
    mine = [row for row in rows if str(row[0]).startswith(prefix)]
    cut = prefix.removeprefix("run-")
    return sorted(
        tuple(str(v).replace(cut, "") if isinstance(v, str) else v for v in row) for row in mine
    )


async def test_a_long_write_sent_again_adds_nothing(store: SqlAlchemyWorkflowStore) -> None:
    mine = handler("h", owner_id="me")
    await store.create_handler(mine)
    item = progress(mine, events=[stored_event(n) for n in range(LONG)])
    async with store.write_engine.begin() as conn:
        assert await progress_.save_progress(conn, [[item], [item]]) == [set(), set()]
    stored = await store.read_events("run-h", limit=2 * LONG)
    assert [e.sequence for e in stored] == list(range(LONG))


@pytest.mark.parametrize("count", [1, 127, 128, 1001])
async def test_events_go_in_one_statement_per_block_never_one_per_row(
    store: SqlAlchemyWorkflowStore, count: int
) -> None:
    mine = handler("h", owner_id="me")
    await store.create_handler(mine)
    inserts: list[tuple[int, bool]] = []  # (parameters bound, executemany)

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.startswith("INSERT INTO workflow_events"):
            inserts.append((len(params), many))

    event.listen(store.write_engine.sync_engine, "before_cursor_execute", seen)
    item = progress(mine, events=[stored_event(n) for n in range(count)])
    assert await store.save_progress([item]) == set()
    # 1,001 rows: 7 blocks of 128, then 64, 32, 8 and 1; each block a power of two.
    blocks = [bound // len(EVENT_COLUMNS) for bound, _ in inserts]
    assert sum(blocks) == count
    assert not any(many for _, many in inserts)
    assert all(size & (size - 1) == 0 and size <= 128 for size in blocks)
    assert len(blocks) == count // 128 + (count % 128).bit_count()
    stored = await store.read_events("run-h", limit=2 * count)
    assert [e.sequence for e in stored] == list(range(count))


async def test_a_host_engine_with_named_parameters_goes_through_sqlalchemy(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'named.db'}", paramstyle="named")
    store = SqlAlchemyWorkflowStore(engine)
    await store.start()
    mine = handler("h", owner_id="me")
    await store.create_handler(mine)
    batch = [progress(mine, ctx='{"n":1}', events=[stored_event(0), stored_event(1)])]
    assert await store.save_progress(batch) == set()
    assert [e.sequence for e in await store.read_events("run-h")] == [0, 1]
    await store.close()
    await engine.dispose()


async def test_events_sent_to_asyncpg_as_arrays_are_stored_as_sqlalchemy_stores_them(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlAlchemyWorkflowStore(postgres_url)
    await store.start()
    try:
        west = timezone(timedelta(hours=-7, minutes=-30))
        times = [T0, T0.astimezone(west), T0.replace(tzinfo=None), at(3).replace(microsecond=0)]
        inserts: list[tuple[int, bool]] = []  # (parameters bound, executemany)

        def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
            if sql.startswith("INSERT INTO workflow_events"):
                inserts.append((len(params), many))

        event.listen(store.write_engine.sync_engine, "before_cursor_execute", seen)
        long = [
            stored_event(n, internal=n % 3 == 0, terminal=n == LONG - 1, created_at=times[n % 4])
            for n in range(LONG)
        ]
        for name in ("fast", "ref"):
            await store.create_handler(handler(name, owner_id="me"))
        bound: list[datetime | None] = []  # timestamps SQLAlchemy processed
        process = UtcDateTime.process_bind_param

        def counted(self: UtcDateTime, value: datetime | None, dialect: Any) -> datetime | None:
            bound.append(value)
            return process(self, value, dialect)

        monkeypatch.setattr(UtcDateTime, "process_bind_param", counted)
        fast = progress(handler("fast", owner_id="me"), events=long)
        assert await store.save_progress([fast]) == set()
        assert inserts == [(len(EVENT_COLUMNS), False)]  # one array per column, one statement
        assert len(bound) < 10  # the row's own timestamp columns, not one per event
        async with store.write_engine.begin() as conn:
            await _EVENTS.execute(conn, [event_values("run-ref", e) for e in long])
        rows = await raw(store, f"SELECT * FROM {events_table.name}")
        assert len(rows) == 2 * LONG
        assert by_twin(rows, "run-fast") == by_twin(rows, "run-ref")
        stored = await store.read_events("run-fast", limit=2 * LONG)
        assert [e.created_at for e in stored] == [
            (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
            for t in (e.created_at for e in long)
        ]
    finally:
        await store.close()

"""``store.schema``: the tables, their timestamp type and the Alembic name filters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import insert, select

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store.schema import (
    TABLE_PREFIX,
    VERSION_TABLE,
    exclude_workflow_tables,
    is_workflow_table,
    metadata,
    only_workflow_tables,
    owners_table,
)
from tests.support.factories import T0

EAST = timezone(timedelta(hours=9))
WEST = timezone(timedelta(hours=-7))


def test_every_table_carries_the_prefix() -> None:
    assert set(metadata.tables) == {
        "workflow_handlers",
        "workflow_events",
        "workflow_inbox",
        "workflow_owners",
    }
    assert all(name.startswith(TABLE_PREFIX) for name in [*metadata.tables, VERSION_TABLE])
    # Named constraints, so migrations and models compare equal on both dialects.
    handlers = metadata.tables["workflow_handlers"]
    assert handlers.primary_key.name == "pk_workflow_handlers"
    assert "ix_workflow_handlers_status_started_at_handler_id" in {i.name for i in handlers.indexes}


def test_name_filters_keep_or_drop_only_this_packages_tables() -> None:
    assert is_workflow_table("workflow_events")
    assert not is_workflow_table("orders")
    assert not is_workflow_table(None)
    for name, ours in [("workflow_inbox", True), ("orders", False), (None, False)]:
        assert only_workflow_tables(name, "table", {}) is ours
        assert exclude_workflow_tables(name, "table", {}) is not ours
    # Columns, indexes and the like follow their table: never filtered by name.
    assert only_workflow_tables("orders_idx", "index", {"table_name": "orders"})
    assert exclude_workflow_tables("workflow_x", "column", {"table_name": "workflow_inbox"})


async def stored_expiries(store: SqlAlchemyWorkflowStore, given: list[datetime]) -> list[datetime]:
    """``given`` written as owners' expiries, read back ordered by the column."""
    rows = [
        {"owner_id": f"o{i}", "heartbeat_at": T0, "expires_at": when}
        for i, when in enumerate(given)
    ]
    async with store.write_engine.begin() as conn:
        await conn.execute(insert(owners_table), rows)
    stmt = select(owners_table.c.expires_at).order_by(owners_table.c.expires_at)
    async with store.read_engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


async def test_timestamps_come_back_aware_utc_and_sort_by_instant(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    # Written in three zones, and naive (taken as UTC): text order would differ.
    given = [
        T0.astimezone(EAST) + timedelta(minutes=1),
        T0.astimezone(WEST) + timedelta(minutes=2),
        T0.replace(tzinfo=None) + timedelta(minutes=3),
        T0 + timedelta(microseconds=1),
    ]
    read = await stored_expiries(sql_store, given)
    assert read == [
        T0 + timedelta(microseconds=1),
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=3),
    ]
    assert all(value.tzinfo is not None and value.utcoffset() == timedelta(0) for value in read)


async def test_timestamps_compare_by_instant_in_where_clauses(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await stored_expiries(sql_store, [T0])
    expires = owners_table.c.expires_at
    async with sql_store.read_engine.connect() as conn:
        tomorrow = T0.astimezone(EAST) + timedelta(days=1)
        later = await conn.scalar(select(expires).where(expires < tomorrow))
        earlier = await conn.scalar(select(expires).where(expires < T0.astimezone(WEST)))
    assert later == T0
    assert earlier is None

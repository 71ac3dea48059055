"""``store._queries``: the shared SQL expressions, run against real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, insert, select

from llama_workflows_asgi.store import HandlerCursor, HandlerQuery, SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._queries import (
    chunks,
    claimable,
    handlers,
    listing,
    query_filters,
    served,
)
from llama_workflows_asgi.store.schema import inbox_table, owners_table
from tests.support.factories import T0, at, handler


async def selected(store: SqlAlchemyWorkflowStore, *where: ColumnElement[bool]) -> list[str]:
    """Handler ids matching ``where``, in id order."""
    stmt = select(handlers.c.handler_id).where(*where).order_by(handlers.c.handler_id)
    async with store.read_engine.connect() as conn:
        return list((await conn.execute(stmt)).scalars())


async def listed(store: SqlAlchemyWorkflowStore, **query: Any) -> list[str]:
    async with store.read_engine.connect() as conn:
        return [row.handler_id for row in await conn.execute(listing(HandlerQuery(**query)))]


def test_chunks_cover_every_item_once_in_order() -> None:
    items = list(range(2501))
    parts = list(chunks(items))
    assert [len(p) for p in parts] == [1000, 1000, 501]
    assert [i for p in parts for i in p] == items
    assert list(chunks([], 3)) == []
    assert [list(p) for p in chunks("abcde", 2)] == [["a", "b"], ["c", "d"], ["e"]]


async def population(store: SqlAlchemyWorkflowStore) -> None:
    rows = [
        handler("a", principal="alice", version="v1"),
        handler("b", principal=None, version=None, workflow_name="other"),
        handler("c", principal="bob", version="v2", status="completed", started_at=at(1)),
        handler("d", principal="alice", version="v1", started_at=at(-1)),
    ]
    for row in rows:
        await store.update(row)


async def test_filters_match_their_columns_and_none_means_null(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await population(sql_store)

    async def where(**query: Any) -> list[str]:
        return await selected(sql_store, *query_filters(HandlerQuery(**query)))

    assert await where() == ["a", "b", "c", "d"]
    assert await where(handler_id_in=["a", "c", "zz"]) == ["a", "c"]
    assert await where(workflow_name_in=["other"]) == ["b"]
    assert await where(status_in=["completed"]) == ["c"]
    assert await where(principal_in=["alice"]) == ["a", "d"]
    assert await where(principal_in=[None]) == ["b"]
    assert await where(principal_in=["bob", None]) == ["b", "c"]
    assert await where(version_in=["v2", None]) == ["b", "c"]
    assert await where(workflow_name_in=["wf"], principal_in=["alice"]) == ["a", "d"]
    # An empty list matches nothing, with or without NULL handling.
    for empty in ("handler_id_in", "status_in", "principal_in", "version_in"):
        assert await where(**{empty: []}) == []


async def test_listing_orders_pages_and_skips_the_checkpoint(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await population(sql_store)
    assert await listed(sql_store) == ["d", "a", "b", "c"]
    assert await listed(sql_store, descending=True) == ["c", "b", "a", "d"]
    assert await listed(sql_store, limit=2) == ["d", "a"]
    after_a = HandlerCursor(T0, "a")
    assert await listed(sql_store, after=after_a) == ["b", "c"]
    assert await listed(sql_store, after=after_a, descending=True) == ["d"]
    assert await listed(sql_store, after=after_a, status_in=["running"]) == ["b"]
    # A cursor in another zone names the same instant.
    shifted = HandlerCursor(T0.astimezone(timezone(timedelta(hours=5))), "a")
    assert await listed(sql_store, after=shifted) == ["b", "c"]
    names = {col.name for col in listing(HandlerQuery(load_ctx=False)).selected_columns}
    assert "ctx" not in names
    assert "handler_id" in names
    assert "ctx" in {col.name for col in listing(HandlerQuery()).selected_columns}


async def test_served_rows_are_those_of_a_served_name_and_version(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await population(sql_store)
    assert await selected(sql_store, served(handlers, None)) == ["a", "b", "c", "d"]
    assert await selected(sql_store, served(handlers, {})) == []
    assert await selected(sql_store, served(handlers, {"wf": ["v2"]})) == ["c"]
    # A row without a version goes to any process serving its name.
    assert await selected(sql_store, served(handlers, {"other": ["v9"]})) == ["b"]
    assert await selected(sql_store, served(handlers, {"wf": ["v1"], "other": []})) == [
        "a",
        "b",
        "d",
    ]


async def add_owner(store: SqlAlchemyWorkflowStore, owner_id: str, expires_in: float) -> None:
    values = {"owner_id": owner_id, "heartbeat_at": T0, "expires_at": at(expires_in)}
    async with store.write_engine.begin() as conn:
        await conn.execute(insert(owners_table).values(values))


async def test_claimable_rows_are_running_and_owned_by_nobody_alive(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    rows = [
        handler("free"),
        handler("live", owner_id="alive"),
        handler("lapsed", owner_id="lapsed"),
        handler("no-row", owner_id="vanished"),
        handler("proven", owner_id="dead-but-beating"),
        handler("done", status="completed"),
        handler("idle", idle_since=at(0)),
        handler("idle-waited", idle_since=at(0)),
    ]
    for row in rows:
        await sql_store.update(row)
    await add_owner(sql_store, "alive", 60)
    await add_owner(sql_store, "lapsed", -1)
    await add_owner(sql_store, "dead-but-beating", 60)
    entry = {"handler_id": "idle-waited", "run_id": "run-idle-waited", "payload": "{}"}
    async with sql_store.write_engine.begin() as conn:
        await conn.execute(insert(inbox_table).values(entry | {"step": None, "created_at": T0}))

    async def claimable_ids(dead: Sequence[str] = (), now_in: float = 0) -> list[str]:
        return await selected(
            sql_store, claimable(handlers, now=at(now_in), dead_owners=list(dead))
        )

    assert await claimable_ids() == ["free", "idle-waited", "lapsed", "no-row"]
    assert await claimable_ids(["dead-but-beating"]) == [
        "free",
        "idle-waited",
        "lapsed",
        "no-row",
        "proven",
    ]
    # Once every heartbeat has lapsed, every running row but the idle one is claimable.
    assert await claimable_ids(now_in=120) == [
        "free",
        "idle-waited",
        "lapsed",
        "live",
        "no-row",
        "proven",
    ]
    alias = handlers.alias("candidate")
    stmt = select(alias.c.handler_id).where(claimable(alias, now=at(0), dead_owners=[]))
    async with sql_store.read_engine.connect() as conn:
        assert sorted((await conn.execute(stmt)).scalars()) == await claimable_ids()

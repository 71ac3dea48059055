"""``store._ownership``: heartbeats, claims and releases, batched in one real transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from llama_workflows_asgi.store import HandlerQuery, PersistentHandler, SqlAlchemyWorkflowStore
from llama_workflows_asgi.store import _ownership as ownership
from llama_workflows_asgi.store.schema import owners_table
from tests.support.factories import LEASE, T0, at, handler


async def rows(store: SqlAlchemyWorkflowStore) -> dict[str, PersistentHandler]:
    return {h.handler_id: h for h in await store.query(HandlerQuery())}


def beat(owner: str, expires_in: float = 60) -> ownership.Beat:
    return ownership.Beat(owner, T0, at(expires_in))


async def owner_rows(conn: AsyncConnection) -> dict[str, object]:
    found = await conn.execute(select(owners_table.c.owner_id, owners_table.c.expires_at))
    return {owner: expires for owner, expires in found}


async def test_heartbeats_claims_and_releases_keep_one_owner_row_each(
    sql_store: SqlAlchemyWorkflowStore,
) -> None:
    await sql_store.create_handler(handler("free"))
    await sql_store.create_handler(handler("orphan", owner_id="crashed", started_at=at(-1)))
    async with sql_store.write_engine.begin() as conn:
        await ownership.heartbeat(
            conn, [beat("crashed", expires_in=-5), beat("idle", expires_in=-5)]
        )
        owned = await ownership.heartbeat(conn, [beat("me"), beat("me", expires_in=90)])
        claim = ownership.Claim("me", at(1), LEASE, (), None, 10, beat("me", expires_in=300))
        claimed = await ownership.claim_handlers(conn, [claim, claim])
        owners = await owner_rows(conn)
        await ownership.release_handlers(conn, [("me", ("free",)), ("crashed", None)])
        after_release = await owner_rows(conn)
    assert owned == [set(), set()]
    # The idle lapsed owner's row went with the next beat; the crashed one holds a run.
    assert sorted(owners) == ["crashed", "me"]
    assert owners["me"] == at(300)
    first, second = claimed
    assert isinstance(first, list)
    assert [(h.handler_id, h.previous_owner_id, h.resume_attempts) for h in first] == [
        ("orphan", "crashed", 1),
        ("free", None, 0),
    ]
    assert second == []  # the batch's first claim took everything
    assert sorted(after_release) == ["me"]
    stored = await rows(sql_store)
    assert stored["free"].owner_id is None
    assert stored["orphan"].owner_id == "me"
    assert stored["orphan"].lease_expires_at == LEASE

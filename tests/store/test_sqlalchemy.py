"""``store.sqlalchemy``: the SQL store's own parts, on SQLite files and a real PostgreSQL.

Its behaviour as a store is ``test_contract.py``; dialect specifics (pragmas,
locks, outages, group commit) are ``test_sqlite.py`` and ``test_postgres.py``;
its lifecycle is ``test_sql_lifecycle.py``, its reads ``test_reads.py``.
"""

from __future__ import annotations

from sqlalchemy import select

from llama_workflows_asgi.store import SqlAlchemyWorkflowStore
from llama_workflows_asgi.store.liveness import owner_key
from llama_workflows_asgi.store.schema import owners_table
from tests.support.factories import T0, at


async def test_heartbeats_record_the_liveness_token(sql_store: SqlAlchemyWorkflowStore) -> None:
    await sql_store.heartbeat("host:1:Labcdef012345", now=T0, expires_at=at(30))
    stmt = select(owners_table.c.token_kind, owners_table.c.token_key)
    async with sql_store.read_engine.connect() as conn:
        kind, key = (await conn.execute(stmt)).one()
    if sql_store.url.get_backend_name() == "postgresql":
        assert (kind, key) == ("advisory_lock", owner_key("host:1:Labcdef012345"))
    else:
        assert (kind, key) == ("flock", None)

"""``store._liveness_pg``: advisory-lock tokens on a dedicated PostgreSQL session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from llama_workflows_asgi.service.ownership import Owner
from llama_workflows_asgi.store._liveness_pg import PostgresLiveness
from llama_workflows_asgi.store.liveness import owner_key
from tests.support.postgres import PostgresServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url(postgres_url: str) -> URL:
    return make_url(postgres_url)


@pytest.fixture
async def pair(url: URL) -> AsyncIterator[tuple[PostgresLiveness, PostgresLiveness]]:
    """Two processes' liveness, in effect: two dedicated sessions on one database."""
    mine, theirs = PostgresLiveness(url), PostgresLiveness(url)
    yield mine, theirs
    await mine.release()
    await theirs.release()


async def held_locks(url: URL) -> list[tuple[str, int]]:
    """``(application_name, key)`` of every advisory lock held in the database.

    A bigint key is shown in ``pg_locks`` as two 32-bit halves (classid, objid).
    """
    engine = create_async_engine(url, poolclass=NullPool)
    query = text(
        "SELECT a.application_name, (l.classid::bigint << 32) | l.objid::bigint"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    try:
        async with engine.connect() as conn:
            return [(name, key) for name, key in await conn.execute(query)]
    finally:
        await engine.dispose()


async def test_a_token_is_an_advisory_lock_of_the_liveness_session(
    pair: tuple[PostgresLiveness, PostgresLiveness], url: URL
) -> None:
    mine, _ = pair
    me = Owner.for_this_process().id
    assert mine.token_key(me) == owner_key(me)
    assert mine.kind == "advisory_lock"
    await mine.acquire(me)
    assert await held_locks(url) == [(PostgresLiveness.application_name, owner_key(me))]
    await mine.release(me)
    assert await held_locks(url) == []


async def test_a_token_held_by_another_session_cannot_be_taken(
    pair: tuple[PostgresLiveness, PostgresLiveness],
) -> None:
    mine, theirs = pair
    me = Owner.for_this_process().id
    await mine.acquire(me)
    with pytest.raises(RuntimeError, match="held elsewhere"):
        await theirs.acquire(me)
    await mine.release()
    await theirs.acquire(me)  # free once its holder let it go
    assert await mine.probe([me]) == set()


async def test_a_probe_judges_only_other_owners_with_tokens(
    pair: tuple[PostgresLiveness, PostgresLiveness],
) -> None:
    mine, theirs = pair
    me, gone = Owner.for_this_process().id, Owner.for_this_process().id
    await mine.acquire(me)
    # Our own owners are alive by definition, however they are probed.
    assert await mine.probe([me, gone]) == {gone}
    assert await theirs.probe([me, gone]) == {gone}
    assert await theirs.probe(["host:1:0123456789ab", "no-token"]) == set()
    assert await theirs.probe([]) == set()
    # A probe unlocks what it took: the dead owner's token is still free to take.
    await theirs.acquire(gone)
    assert await mine.probe([gone]) == set()


async def test_releasing_one_owner_keeps_the_others(
    pair: tuple[PostgresLiveness, PostgresLiveness], url: URL
) -> None:
    mine, theirs = pair
    first, second = Owner.for_this_process().id, Owner.for_this_process().id
    await mine.acquire(first)
    await mine.acquire(second)
    await mine.release(first)
    assert await theirs.probe([first, second]) == {first}
    assert [key for _, key in await held_locks(url)] == [owner_key(second)]
    await mine.release()
    assert await held_locks(url) == []
    assert mine.held


async def test_a_lost_liveness_connection_is_reported_and_the_token_taken_again(
    postgres_server: PostgresServer, url: URL
) -> None:
    mine = PostgresLiveness(url, check_interval=0.2)
    theirs = PostgresLiveness(url)
    me = Owner.for_this_process().id
    changes: list[bool] = []
    try:
        await mine.acquire(me, changes.append)
        assert await theirs.probe([me]) == set()
        postgres_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{PostgresLiveness.application_name}' "
            f"AND datname = '{url.database}' AND pid <> pg_backend_pid()"
        )
        await eventually(lambda: changes == [False, True], "the token is lost, then held again")
        assert mine.held
        assert await theirs.probe([me]) == set()
    finally:
        await mine.release()
        await theirs.release()
    assert await theirs.probe([me]) == {me}
    await theirs.release()

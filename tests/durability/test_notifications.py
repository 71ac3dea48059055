"""Two real replicas on one PostgreSQL: an answer sent to one reaches a run live on the other
at once, through ``LISTEN/NOTIFY``, also after the listening connections were terminated.

Both replicas poll only every 10 s (ownership rounds and stream tails), so
answers that come back within a couple of seconds can only have been carried by
notifications. The figures (p50/p99) are ``benchmarks.cross_replica``'s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.support.cross_replica import answer_elsewhere
from tests.support.processes import ServerProcess, server_processes

pytestmark = pytest.mark.timeout(240)

POLL = "10"
BOUND = 2.5  # seconds; polling alone would take up to two poll intervals
SLOW_POLLS = {
    "WF_POLL_INTERVAL": POLL,
    "WF_STREAM_POLL_INTERVAL": POLL,
    "WF_LEASE_TTL": "30",
    "WF_IDLE_TIMEOUT": "none",
}


def replica(name: str, postgres_url: str, tmp_path: Path) -> ServerProcess:
    return ServerProcess(name, {"WF_DATABASE_URL": postgres_url, **SLOW_POLLS}, tmp_path)


async def listening_backends(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            "llama_workflows_asgi notifications",
        )
        return sorted(row["pid"] for row in rows)
    finally:
        await conn.close()


async def terminate(dsn: str, pids: list[int]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for pid in pids:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def wait_for_new_backends(dsn: str, old: list[int], count: int) -> None:
    async def check() -> None:
        while True:
            current = await listening_backends(dsn)
            if len(current) == count and not set(current) & set(old):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(check(), 30)


async def test_answers_cross_replicas_at_once_and_again_after_the_listeners_reconnect(
    postgres_url: str, tmp_path: Path
) -> None:
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    a = replica("a", postgres_url, tmp_path)
    b = replica("b", postgres_url, tmp_path)
    with server_processes(a, b):
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        for _ in range(3):
            assert await answer_elsewhere(a.url, b.url) < BOUND
            assert await answer_elsewhere(b.url, a.url) < BOUND
        before = await listening_backends(dsn)
        assert len(before) == 2
        await terminate(dsn, before)
        await wait_for_new_backends(dsn, before, 2)
        assert await answer_elsewhere(a.url, b.url) < BOUND
        assert await answer_elsewhere(b.url, a.url) < BOUND

"""``store.liveness``: owner tokens that the system drops when their process dies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llama_workflows_asgi.service.ownership import Owner
from llama_workflows_asgi.store import AbstractWorkflowStore, SqlAlchemyWorkflowStore
from llama_workflows_asgi.store.liveness import FileLockLiveness
from tests.store.conftest import make_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def two_views(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[AbstractWorkflowStore, AbstractWorkflowStore]:
    """Two store objects on one database (the same object for the memory store)."""
    first = make_store(request.param, request, tmp_path)
    if request.param == "memory":
        return first, first
    assert isinstance(first, SqlAlchemyWorkflowStore)
    return first, SqlAlchemyWorkflowStore(first.url)


async def test_a_held_token_is_alive_and_a_released_one_is_dead(
    two_views: tuple[AbstractWorkflowStore, AbstractWorkflowStore],
) -> None:
    mine, theirs = two_views
    me, other, never = (Owner.for_this_process().id for _ in range(3))
    try:
        await mine.liveness.acquire(me)
        await theirs.liveness.acquire(other)
        assert await theirs.liveness.probe([me, never]) == {never}
        assert await mine.liveness.probe([other]) == set()
        await mine.liveness.release(me)
        assert await theirs.liveness.probe([me, other]) == {me}
        # Ids without a token (older processes, hand-written rows) are never judged.
        assert await theirs.liveness.probe(["host:1:000000000000"]) == set()
    finally:
        await mine.liveness.release()
        await theirs.liveness.release()


_HOLDER = """
import asyncio, sys
from llama_workflows_asgi.store.liveness import FileLockLiveness

async def main():
    liveness = FileLockLiveness(sys.argv[1])
    await liveness.acquire(sys.argv[2])
    print("held", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_file_token_is_dropped_by_the_kernel_when_its_process_is_killed(
    tmp_path: Path,
) -> None:
    database = tmp_path / "handlers.db"
    owner = Owner.for_this_process().id
    holder = _start_holder(database, owner)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        prober = FileLockLiveness(database)
        assert await prober.probe([owner]) == set()
        holder.kill()
        holder.wait(10)
        assert await prober.probe([owner]) == {owner}
        # The dead owner's file is gone, and it stays dead.
        assert list(prober.directory.iterdir()) == []
        assert await prober.probe([owner]) == {owner}
    finally:
        holder.kill()
        holder.wait(10)


def _start_holder(database: Path, owner: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", _HOLDER, str(database), owner]
    return subprocess.Popen(command, stdout=subprocess.PIPE)

"""``service.shutdown``: the order of a graceful stop, and what it leaves written."""

from __future__ import annotations

import time

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import HandlerQuery
from tests.service.conftest import serving, sqlite_store

pytestmark = pytest.mark.timeout(30)


async def test_release_all_stops_every_run_and_writes_its_release(sqlite_url: str) -> None:
    service = serving(sqlite_store(sqlite_url))
    await service.start()
    try:
        runs = [await service.start_run("slow", StartEvent(seconds=30)) for _ in range(3)]
        service._stop.begin()  # as begin_stop does, before the release
        await service._shutdown.release_all(began=time.monotonic())
        rows = await service.store.query(HandlerQuery())
        assert {r.handler_id for r in rows} == {r.handler_id for r in runs}
        for row in rows:  # left running, unowned, with a checkpoint: for the next owner
            assert (row.status, row.owner_id) == ("running", None)
            assert row.ctx is not None
        assert all(live.releasing for live in service._live.values())
        assert service.retention._task is None
    finally:
        await service.stop()

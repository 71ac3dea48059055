"""``service.reading``: where a stream starts, and the scoped lookup of one handler."""

from __future__ import annotations

import pytest

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.errors import HandlerNotFoundError
from llama_workflows_asgi.service.reading import read_handler
from tests.support.factories import handler

pytestmark = pytest.mark.timeout(20)


async def test_read_handler_is_scoped_and_skips_the_checkpoint(
    memory_service: WorkflowService,
) -> None:
    store = memory_service.store
    await store.update(handler("h1", principal="alice", ctx={"big": True}))
    row = await read_handler(store, "h1", None)
    assert row.ctx is None
    assert (await read_handler(store, "h1", ["alice"])).handler_id == "h1"
    for principal_in in (["bob"], [None]):
        with pytest.raises(HandlerNotFoundError):
            await read_handler(store, "h1", principal_in)
    with pytest.raises(HandlerNotFoundError):
        await read_handler(store, "missing", None)


async def test_a_finished_run_streams_what_is_left_then_nothing(
    memory_service: WorkflowService,
) -> None:
    done = await memory_service.run("greet")
    reader = memory_service._reader
    stream = await reader.open(done, after=-1, include_internal=False)
    assert stream is not None
    batches = [batch async for batch in stream]
    kinds = [e.event_type for batch in batches if isinstance(batch, list) for e in batch]
    assert kinds == ["ProgressEvent", "ProgressEvent", "ProgressEvent", "StopEvent"]
    last = await reader.open(done, after="now", include_internal=False)
    assert last is None  # finished, and nothing after its last event


async def test_a_handler_without_a_run_has_no_stream(memory_service: WorkflowService) -> None:
    row = handler("h2", run_id=None, status="completed")
    with pytest.raises(HandlerNotFoundError):
        await memory_service._reader.open(row, after=-1, include_internal=False)

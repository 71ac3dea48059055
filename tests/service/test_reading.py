"""``service.reading``: where a stream starts, and the scoped lookup of one handler."""

from __future__ import annotations

import asyncio

import pytest
from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService
from llama_workflows_asgi.errors import HandlerNotFoundError
from llama_workflows_asgi.service.reading import read_handler
from llama_workflows_asgi.store import HandlerQuery, PersistentHandler
from tests.service.conftest import FAST
from tests.support.factories import handler
from tests.support.log_reads import count_log_reads
from tests.support.workflows import ProgressEvent, SlowWorkflow

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


class _GatedBurst(Workflow):
    """Writes 600 events at once (more than a live run's tail keeps) once ``gate`` is set."""

    gate: asyncio.Event

    @step
    async def burst(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await self.gate.wait()
        for i in range(600):
            ctx.write_event_to_stream(ProgressEvent(msg="burst", i=i))
        return StopEvent(result=600)


async def test_a_write_longer_than_the_tail_streams_from_memory_exactly_once(
    memory_service: WorkflowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = _GatedBurst(timeout=None)
    workflow.gate = asyncio.Event()
    memory_service.add_workflow("burst", workflow)
    reads = count_log_reads(memory_service.store, monkeypatch)
    started = await memory_service.start_run("burst")
    stream = await memory_service.open_stream(started.handler_id, after=-1)
    assert stream is not None
    workflow.gate.set()
    sequences = [e.sequence for batch in [b async for b in stream] for e in batch]
    assert reads == []  # the written events came from the run's tail, none read back
    assert started.run_id is not None
    logged = await memory_service.store.read_events(started.run_id, after_sequence=-1)
    assert sequences == [e.sequence for e in logged if e.terminal or not e.internal]
    assert len(sequences) == 601  # the 600 and the stop event, each once


async def test_a_stream_of_a_run_live_here_opens_without_a_store_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = WorkflowService(MemoryWorkflowStore(), config=FAST, scoped=True)
    service.add_workflow("slow", SlowWorkflow(timeout=None))
    async with service.running_context():
        started = await service.start_run("slow", principal="alice")
        queries: list[HandlerQuery] = []
        query = service.store.query

        async def counted(asked: HandlerQuery) -> list[PersistentHandler]:
            queries.append(asked)
            return await query(asked)

        monkeypatch.setattr(service.store, "query", counted)
        stream = await service.open_stream(started.handler_id, principal="alice", after=-1)
        assert stream is not None
        assert stream.run_id == started.run_id
        assert queries == []  # the run executing here answered for its row
        stream.close()
        # Another caller is not answered from the live run: the store says "not found".
        with pytest.raises(HandlerNotFoundError):
            await service.open_stream(started.handler_id, principal="bob", after=-1)
        assert [q.handler_id_in for q in queries] == [[started.handler_id]]
        await service.cancel(started.handler_id, principal="alice")

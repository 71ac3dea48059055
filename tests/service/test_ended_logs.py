"""``service.ended_logs``: the written logs of the runs that ended here last, for late streams."""

from __future__ import annotations

import asyncio

import pytest
from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import WorkflowService
from llama_workflows_asgi.service.ended_logs import EndedLogs, written_after
from llama_workflows_asgi.store.base import StoredEvent
from tests.support.log_reads import count_log_reads
from tests.support.waiting import eventually
from tests.support.workflows import ProgressEvent

pytestmark = pytest.mark.timeout(20)


def _log(first: int, last: int) -> list[StoredEvent]:
    """Events ``first``..``last``, the last one terminal."""
    return [StoredEvent(s, "{}", "E", terminal=s == last) for s in range(first, last + 1)]


def _sequences(events: list[StoredEvent] | None) -> list[int] | None:
    return None if events is None else [e.sequence for e in events]


def test_written_after_answers_only_what_the_tail_covers() -> None:
    tail = _log(3, 6)
    assert _sequences(written_after(tail, 6, 2)) == [3, 4, 5, 6]
    assert _sequences(written_after(tail, 6, 4)) == [5, 6]
    assert written_after(tail, 6, 6) == []  # nothing written after the cursor
    assert written_after(tail, 6, 1) is None  # 2 is only in the store
    assert written_after([], -1, -1) == []
    assert written_after([], 4, 1) is None


def test_a_kept_log_serves_a_cursor_it_covers_and_nothing_else() -> None:
    logs = EndedLogs()
    logs.keep("r1", "completed", _log(0, 4))
    assert _sequences(logs.events_after("r1", -1)) == [0, 1, 2, 3, 4]
    assert _sequences(logs.events_after("r1", 2)) == [3, 4]
    # Past its end: the stream has had the terminal event, the store answers the rest.
    assert logs.events_after("r1", 4) is None
    assert logs.events_after("r2", -1) is None
    logs.keep("r3", "cancelled", _log(5, 7))  # a tail that does not reach back to 0
    assert logs.events_after("r3", -1) is None
    assert _sequences(logs.events_after("r3", 4)) == [5, 6, 7]


def test_only_final_logs_are_kept() -> None:
    logs = EndedLogs()
    logs.keep("r1", "failed", _log(0, 2))  # a retry reopens a failed run's log
    logs.keep("r2", "running", _log(0, 2))  # a released run goes on elsewhere
    logs.keep("r3", "completed", [])
    assert len(logs) == 0
    assert logs.events_after("r1", -1) is None


def test_the_oldest_logs_go_first_beyond_either_bound() -> None:
    logs = EndedLogs(keep_runs=2, keep_events=10)
    logs.keep("r1", "completed", _log(0, 2))
    logs.keep("r2", "completed", _log(0, 2))
    logs.keep("r3", "completed", _log(0, 2))  # a third run: r1 goes
    assert logs.events_after("r1", -1) is None
    assert len(logs) == 2
    logs.keep("r4", "completed", _log(0, 7))  # 3 + 8 events: r2 goes as well
    assert (logs.events_after("r2", -1), logs.events_after("r3", -1)) == (None, None)
    assert _sequences(logs.events_after("r4", 6)) == [7]
    logs.keep("r5", "completed", _log(0, 10))  # longer than the bound alone: not kept
    assert logs.events_after("r5", -1) is None
    assert len(logs) == 1
    logs.keep("r4", "completed", _log(0, 1))  # kept again: replaces, not adds
    logs.forget("r4")
    logs.forget("r4")
    assert len(logs) == 0
    logs.keep("r6", "completed", _log(0, 9))  # the whole bound is free again
    assert len(logs) == 1


def test_payload_text_is_bounded_too() -> None:
    logs = EndedLogs(keep_chars=10)
    logs.keep("r1", "completed", _log(0, 2))  # 3 payloads of 2 characters
    logs.keep("r2", "completed", _log(0, 1))
    assert len(logs) == 2
    logs.keep("r3", "completed", _log(0, 1))  # 6 + 4 + 4 > 10: r1 goes
    assert logs.events_after("r1", -1) is None
    assert len(logs) == 2
    logs.keep("r4", "completed", [StoredEvent(0, "x" * 11, "E", terminal=True)])
    assert logs.events_after("r4", -1) is None  # longer than the bound alone


async def test_a_stream_opened_after_its_run_ended_here_reads_no_store(
    memory_service: WorkflowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_log_reads(memory_service.store, monkeypatch)
    done = await memory_service.run("greet")
    assert done.run_id is not None
    assert done.handler_id not in memory_service._live
    stream = await memory_service.open_stream(done.handler_id, after=-1)
    assert stream is not None
    streamed = [e for batch in [b async for b in stream] for e in batch]
    assert reads == []
    logged = await memory_service.store.read_events(done.run_id, after_sequence=-1)
    assert streamed == [e for e in logged if e.terminal or not e.internal]
    assert streamed[-1].terminal


class _Gated(Workflow):
    """Streams one event, waits for ``gate``, then streams another and stops."""

    gate: asyncio.Event

    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="before", i=0))
        await self.gate.wait()
        ctx.write_event_to_stream(ProgressEvent(msg="after", i=1))
        return StopEvent(result="done")


async def test_a_stream_that_reads_on_after_its_run_ended_reads_no_store(
    memory_service: WorkflowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = _Gated(timeout=None)
    workflow.gate = asyncio.Event()
    memory_service.add_workflow("gated", workflow)
    store = memory_service.store
    started = await memory_service.start_run("gated")
    assert started.run_id is not None
    live = memory_service._live.get(started.handler_id)
    assert live is not None
    await eventually(lambda: live.durable_sequence >= 1, "the first event written")
    stream = await memory_service.open_stream(started.handler_id, after=-1)
    assert stream is not None
    first = await stream.next_batch(1.0)
    assert [e.event_type for e in first or []] == ["ProgressEvent"]
    reads = count_log_reads(store, monkeypatch)
    workflow.gate.set()
    await memory_service.wait_for(started.handler_id)
    await eventually(lambda: started.handler_id not in memory_service._live, "the run retired")
    rest = [e for batch in [b async for b in stream] for e in batch]
    assert reads == []  # the rest came from the run's kept tail
    assert [e.event_type for e in rest] == ["ProgressEvent", "StopEvent"]
    logged = await memory_service.store.read_events(started.run_id, after_sequence=-1)
    visible = [e for e in logged if e.terminal or not e.internal]
    assert [e.sequence for e in (first or []) + rest] == [e.sequence for e in visible]


async def test_a_failed_run_streams_from_the_store(
    memory_service: WorkflowService, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_log_reads(memory_service.store, monkeypatch)
    failed = await memory_service.run("fail")
    assert failed.status == "failed"
    assert failed.run_id is not None
    assert memory_service._live.ended.events_after(failed.run_id, -1) is None
    stream = await memory_service.open_stream(failed.handler_id, after=-1)
    assert stream is not None
    streamed = [e for batch in [b async for b in stream] for e in batch]
    assert reads == [failed.run_id]
    assert streamed[-1].terminal

"""Failure isolation in the progress writer and the runs it writes.

Whatever one run produces that cannot be saved fails that run alone, with a
readable error and a stream ending on the failure; every other run goes on.
Runs on the memory store, SQLite and a real PostgreSQL (``make_store``).
The last tests drive the ``ProgressWriter`` alone, without a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import (
    BadEventError,
    HandlerQuery,
    MemoryWorkflowStore,
    PersistentHandler,
    ServiceConfig,
    WorkflowService,
)
from llama_workflows_asgi.service.guard import start_guarded
from llama_workflows_asgi.service.writer import ProgressWriter
from llama_workflows_asgi.store import AbstractWorkflowStore, RunProgress, SqlAlchemyWorkflowStore
from llama_workflows_asgi.store._batch import Poke, Source
from tests.support.factories import event, handler, progress
from tests.support.stores import StoreFactory
from tests.support.workflows import (
    FAULTS,
    AnswerEvent,
    FaultInput,
    FaultyWorkflow,
    Opaque,
    make_workflows,
    nested_list,
)

pytestmark = pytest.mark.timeout(60)

CONFIG = ServiceConfig(lease_ttl=3.0, poll_interval=0.1, stream_poll_interval=0.05)

EXPECTED_ERRORS = {
    "event": "The run's event Note cannot be serialized: Unable to serialize unknown type: Opaque",
    "state": "The run's state cannot be checkpointed: Failed to serialize state value for key",
    "result": "The run's result cannot be serialized: Unable to serialize unknown type: Opaque",
    "deep_state": "The run's state cannot be checkpointed: Failed to serialize state value",
    "keyboard": "A step raised KeyboardInterrupt, which stops the run",
    "systemexit": "A step raised SystemExit, which stops the run: 3",
    "cancelled": "A step raised CancelledError, which stops the run",
}


def new_service(store: AbstractWorkflowStore, config: ServiceConfig = CONFIG) -> WorkflowService:
    service = WorkflowService(store, config=config)
    for name, workflow in make_workflows().items():
        service.add_workflow(name, workflow)
    service.add_workflow("faulty", FaultyWorkflow(timeout=None))
    return service


@pytest.fixture
async def service(make_store: StoreFactory) -> AsyncIterator[WorkflowService]:
    service = new_service(make_store())
    async with service.running_context():
        yield service


async def event_types(service: WorkflowService, handler_id: str) -> list[str]:
    stream = await service.open_stream(handler_id, after=-1, include_internal=True)
    assert stream is not None
    types: list[str] = []
    async for batch in stream:
        if isinstance(batch, list):
            types += [event.event_type for event in batch]
    return types


async def run_beside_healthy_runs(
    service: WorkflowService, mode: str, healthy: int = 10
) -> tuple[PersistentHandler, list[PersistentHandler]]:
    """Start the faulty run among healthy ones; wait for all of them."""
    faulty = await service.start_run("faulty", FaultInput(mode=mode))
    others = [await service.start_run("greet", StartEvent(name=f"n{i}")) for i in range(healthy)]
    done = await asyncio.wait_for(
        asyncio.gather(*(service.wait_for(h.handler_id) for h in [faulty, *others])), 30
    )
    return done[0], done[1:]


def assert_readable(error: str | None, expected: str) -> None:
    assert error is not None
    assert error.startswith(expected), error
    for internal in ("tests.", "workflows.", "0x"):  # module paths, addresses
        assert internal not in error


@pytest.mark.parametrize("mode", FAULTS)
async def test_a_run_whose_output_cannot_be_saved_fails_alone(
    service: WorkflowService, mode: str
) -> None:
    failed, others = await run_beside_healthy_runs(service, mode)

    assert failed.status == "failed"
    assert_readable(failed.error, EXPECTED_ERRORS[mode])
    assert (await service.get(failed.handler_id)).error == failed.error  # as written
    assert (await event_types(service, failed.handler_id))[-1] == "WorkflowFailedEvent"
    assert [h.status for h in others] == ["completed"] * len(others)
    # The writer and the service are still working.
    after = await service.run("greet", StartEvent(name="after"))
    assert after.status == "completed"


@pytest.mark.parametrize(
    ("store_kind", "mode", "reason"),
    [
        ("sqlite", "surrogate", "can't encode character"),
        ("postgres", "surrogate", "can't encode character"),
        ("postgres", "long_name", "value too long for type character varying(255)"),
    ],
    indirect=["store_kind"],
)
async def test_progress_the_database_refuses_fails_only_its_run(
    make_store: StoreFactory, mode: str, reason: str
) -> None:
    # No driver can send an unpaired surrogate, PostgreSQL refuses a value too
    # long for its column: the batch holding it fails as a whole, and the
    # writer writes it again run by run to find the culprit.
    service = new_service(make_store(), ServiceConfig(checkpoint_delay=0.05))
    async with service.running_context():
        failed, others = await run_beside_healthy_runs(service, mode, healthy=20)
        types = await event_types(service, failed.handler_id)
        row = await service.get(failed.handler_id)

    assert row.status == "failed"
    assert_readable(row.error, "The run's progress cannot be saved: ")
    assert reason in str(row.error)
    assert types[-1] == "WorkflowFailedEvent"
    assert not {"Note", "L" * 300} & set(types)  # the refused event is dropped, its failure kept
    assert [h.status for h in others] == ["completed"] * 20


async def test_unsaveable_input_from_host_code_is_refused_before_anything_is_written(
    service: WorkflowService,
) -> None:
    with pytest.raises(BadEventError, match="Maximum serialization depth exceeded"):
        await service.start_run("greet", StartEvent(name=nested_list(300)))
    with pytest.raises(BadEventError, match="cannot be serialized: Unable to serialize unknown"):
        await service.start_run("greet", StartEvent(name=Opaque()))
    handler = await service.start_run("hitl")
    with pytest.raises(BadEventError, match="Maximum serialization depth exceeded"):
        await service.send_event(handler.handler_id, AnswerEvent(answer="x", deep=nested_list(300)))
    await service.send_event(handler.handler_id, AnswerEvent(answer="fine"))
    done = await service.wait_for(handler.handler_id)

    assert done.result is not None
    assert done.result.result == "got fine"
    listed = await service.list_handlers(HandlerQuery())
    assert [h.handler_id for h in listed.handlers] == [handler.handler_id]


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
async def test_input_at_the_depth_limit_checkpoints_and_resumes(make_store: StoreFactory) -> None:
    deep = nested_list(60)  # the start event's envelope nests 62 levels: inside the limit
    first = new_service(make_store())
    async with first.running_context():
        handler = await first.start_run("slow", StartEvent(seconds=0.5, deep=deep))
    # Stopped mid-run: released from its checkpoint, resumed by the next process.
    second = new_service(make_store())
    async with second.running_context():
        done = await asyncio.wait_for(second.wait_for(handler.handler_id), 20)
        [row] = await second.store.query(HandlerQuery(handler_id_in=[handler.handler_id]))

    assert done.status == "completed"
    assert row.start_event is not None
    assert row.start_event["value"]["_data"]["deep"] == deep


async def test_a_background_task_that_crashes_is_logged_once_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    restarted = asyncio.Event()

    async def body() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("boom")
        restarted.set()
        await asyncio.Event().wait()

    logger = logging.getLogger("tests.guard")
    with caplog.at_level(logging.DEBUG, logger="tests.guard"):
        task = start_guarded("test-task", body, logger)
        await asyncio.wait_for(restarted.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(calls) == 4
    assert len(errors) == 1, "the same crash is logged once"
    assert errors[0].exc_info is not None
    assert "boom" in errors[0].getMessage()


# -- the writer on its own ------------------------------------------------------------
#
# ScriptedRun stands in for a LiveRun (which needs an engine): it hands the
# writer prepared progress and records what the writer does with it. The
# store is real; Runs is the writer's view of the live-run set (LiveRunSet).


class ScriptedRun:
    """A run whose next writes are given: ``collect`` hands them out one per round."""

    def __init__(self, row: PersistentHandler, *writes: RunProgress) -> None:
        assert row.run_id is not None
        self.handler_id, self.run_id = row.handler_id, row.run_id
        self.writes = list(writes)
        self.collected = 0
        self.acknowledged: list[RunProgress] = []
        self.requeued: list[RunProgress] = []
        self.poisoned_with: str | None = None
        self.finished = False
        self.outcome: str | None = None  # a LiveRun's ``Outcome`` once it has ended

    @property
    def poisoned(self) -> bool:
        return self.poisoned_with is not None

    @property
    def settled(self) -> bool:
        return self.finished

    def collect(self, owner_id: str | None, now: datetime) -> RunProgress | None:
        self.collected += 1
        return self.writes.pop(0) if self.writes else None

    def acknowledge(self, progress: RunProgress) -> None:
        self.acknowledged.append(progress)
        self.finished = progress.status != "running" or progress.release

    def requeue(self, progress: RunProgress) -> None:
        self.requeued.append(progress)

    def poison(self, reason: str) -> None:
        self.poisoned_with = reason


class Runs:
    """The writer's live-run set: what it lost and what it retired."""

    def __init__(self, live: int = 0) -> None:
        self.lost: list[ScriptedRun] = []
        self.retired: list[ScriptedRun] = []
        self.live = live

    def __len__(self) -> int:
        return self.live

    def lose(self, live: ScriptedRun) -> None:
        self.lost.append(live)

    def retire(self, live: ScriptedRun) -> None:
        self.retired.append(live)


@pytest.fixture
async def started(make_store: StoreFactory) -> AsyncIterator[AbstractWorkflowStore]:
    store = make_store()
    await store.start()
    yield store
    await store.close()


async def write_all(store: AbstractWorkflowStore, *runs: ScriptedRun) -> Runs:
    """Mark ``runs``, let one writer write everything, return what it told the set."""
    told = Runs()
    writer = ProgressWriter(store, "me", delay=0, runs=told)  # type: ignore[arg-type]
    for run in runs:
        writer.mark(run)  # type: ignore[arg-type]
    writer.start()
    try:
        await asyncio.wait_for(writer.drain(), 10)
    finally:
        await writer.stop()
    return told


async def test_a_run_whose_end_is_written_is_retired(started: AbstractWorkflowStore) -> None:
    row = handler("h", owner_id="me")
    await started.create_handler(row)
    run = ScriptedRun(row, progress(row, status="completed", events=[event(0)]))

    told = await write_all(started, run)

    assert told.retired == [run]
    assert told.lost == []
    assert [p.status for p in run.acknowledged] == ["completed"]
    [stored] = await started.query(HandlerQuery(handler_id_in=["h"]))
    assert (stored.status, stored.owner_id) == ("completed", None)


async def test_a_write_fenced_off_loses_the_run_and_writes_nothing(
    started: AbstractWorkflowStore,
) -> None:
    row = handler("h", owner_id="thief")  # another process took the run
    await started.create_handler(row)
    run = ScriptedRun(row, progress(row, owner_id="me", events=[event(0)], status="completed"))

    told = await write_all(started, run)

    assert told.lost == [run]
    assert told.retired == []
    assert run.acknowledged == []  # its events never reach a stream
    assert await started.read_events(row.run_id or "") == []
    [stored] = await started.query(HandlerQuery(handler_id_in=["h"]))
    assert (stored.status, stored.owner_id) == ("running", "thief")


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
async def test_marks_between_rounds_become_one_write(make_store: StoreFactory) -> None:
    store = make_store()
    assert isinstance(store, SqlAlchemyWorkflowStore)  # it counts its transactions
    async with contextlib.AsyncExitStack() as stack:
        await store.start()
        stack.push_async_callback(store.close)
        rows = [handler(f"h{i}", owner_id="me") for i in range(10)]
        for row in rows:
            await store.create_handler(row)
        runs = [ScriptedRun(row, progress(row, events=[event(0)])) for row in rows]
        before = store.commits

        told = ProgressWriter(store, "me", delay=0, runs=Runs())  # type: ignore[arg-type]
        for _ in range(3):
            for run in runs:
                told.mark(run)  # type: ignore[arg-type]
        told.start()
        await asyncio.wait_for(told.drain(), 10)
        await told.stop()

        assert store.commits == before + 1  # ten runs, marked thrice each: one transaction
        assert [run.collected for run in runs] == [1] * 10
        assert await store.last_sequences([r.run_id for r in runs]) == {r.run_id: 0 for r in runs}


class RefusingStore(MemoryWorkflowStore):
    """Refuses every batch holding ``refused``'s progress, as a database refuses a bad value."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def save_progress(self, batch: Sequence[RunProgress]) -> set[str]:
        if any(item.handler_id == self.refused for item in batch):
            raise ValueError(f"a value of {self.refused} is refused")
        return await super().save_progress(batch)


async def test_progress_the_store_refuses_poisons_only_its_run() -> None:
    store = RefusingStore("bad")
    good, bad = handler("good", owner_id="me"), handler("bad", owner_id="me")
    for row in (good, bad):
        await store.create_handler(row)
    healthy = ScriptedRun(good, progress(good, events=[event(0)]))
    refused = ScriptedRun(bad, progress(bad, events=[event(0)]))

    told = await write_all(store, healthy, refused)

    assert refused.poisoned_with is not None
    assert refused.poisoned_with.startswith("The run's progress cannot be saved: ")
    assert refused.acknowledged == []
    assert [len(p.events) for p in healthy.acknowledged] == [1]
    assert told.lost == []


class PokeRecorder:
    """The store's feed as the writer sees it: records what each poke said of the work."""

    def __init__(self, feed: Poke) -> None:
        self.feed = feed
        self.complete: list[bool] = []

    def poke(self, delay: float = 0.0, *, complete: bool = False) -> None:
        self.complete.append(complete)
        self.feed.poke(delay, complete=complete)

    def close(self) -> None:
        self.feed.close()


class RecordingStore(MemoryWorkflowStore):
    """A memory store whose progress feed records the writer's pokes."""

    recorder: PokeRecorder

    def progress_feed(self, source: Source[RunProgress, bool]) -> Poke:
        self.recorder = PokeRecorder(super().progress_feed(source))
        return self.recorder


async def test_the_writer_says_the_work_is_complete_once_every_live_run_has_ended() -> None:
    store = RecordingStore()
    rows = [handler(name, owner_id="me") for name in ("a", "b")]
    for row in rows:
        await store.create_handler(row)
    a, b = (ScriptedRun(row, progress(row, status="completed")) for row in rows)
    writer = ProgressWriter(store, "me", delay=0, runs=Runs(live=2))  # type: ignore[arg-type]
    writer.start()

    writer.mark(a)  # type: ignore[arg-type]  # running: b (or a) may still add to the batch
    a.outcome = b.outcome = "completed"
    writer.mark(a)  # type: ignore[arg-type]  # a has ended, b has not been marked
    writer.mark(b)  # type: ignore[arg-type]  # both have ended: waiting would gather nothing
    said = list(store.recorder.complete)
    await asyncio.wait_for(writer.drain(), 10)
    await writer.stop()

    assert said == [False, False, True]
    assert (a.acknowledged[0].status, b.acknowledged[0].status) == ("completed", "completed")


async def test_a_run_that_ends_tells_the_writer_so_through_the_service() -> None:
    # A run marked while running (its ticks) is marked again when it ends: the
    # writer learns the work is complete only from that second mark.
    store = RecordingStore()
    service = new_service(store)
    async with service.running_context():
        done = await service.run("greet", StartEvent(name="solo"))  # type: ignore[call-arg]
        said = list(store.recorder.complete)

    assert done.status == "completed"
    assert said[-1] is True, said
    assert said.count(True) == 1, said

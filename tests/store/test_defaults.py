"""``store._defaults``: what every store inherits, answered through its own methods."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from workflows.events import StopEvent

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.store import MemoryWorkflowStore
from llama_workflows_asgi.store._defaults import StoreDefaults
from llama_workflows_asgi.store._steps import Result
from llama_workflows_asgi.store.base import AbstractWorkflowStore, RunProgress
from llama_workflows_asgi.store.liveness import UnprovenLiveness
from tests.support.factories import T0, at, event, handler, progress


def test_the_interface_inherits_its_defaults() -> None:
    assert issubclass(AbstractWorkflowStore, StoreDefaults)
    assert AbstractWorkflowStore.count_queued is StoreDefaults.count_queued


class PlainStore(MemoryWorkflowStore):
    """The memory store with the interface's own liveness (it has no tokens of its own)."""

    liveness = AbstractWorkflowStore.liveness  # type: ignore[assignment]


async def test_the_interfaces_defaults_answer_through_the_stores_own_methods() -> None:
    store = PlainStore()
    assert isinstance(store.liveness, UnprovenLiveness)
    assert store.notifications is store.notifications
    assert store.notifications is not PlainStore().notifications
    store.result_classes["x.Y"] = StopEvent
    assert PlainStore().result_classes == {}
    await store.start()
    await store.ping()
    for i, name in enumerate(["a", "b", "c"]):
        row = handler(name, owner_id="me", started_at=at(i))
        await store.create_handler(row)
        await store.save_progress([progress(row, events=[event(0), event(1), event(2)])])
    # One read per run, at most ``limit`` events in all, runs without news left out.
    found = await store.read_new_events({"run-a": 0, "run-b": 2, "run-c": -1}, limit=3)
    assert {run: [e.sequence for e in log] for run, log in found.items()} == {
        "run-a": [1, 2],
        "run-c": [0],
    }
    assert await store.read_new_events({"run-a": 0}, limit=0) == {}
    await store.create_handler(handler("queued", workflow_name="other"))
    await store.create_handler(handler("idle", idle_since=T0))
    await store.create_handler(handler("done", status="completed"))
    assert await store.count_queued() == {"other": 1}
    await store.close()


class OneBatch:
    """A source holding a fixed batch of progress, pulled once; records how it settled."""

    def __init__(self, items: list[RunProgress]) -> None:
        self.items = items
        self.results: dict[str, Result[bool]] = {}
        self.done = asyncio.Event()

    def take(self) -> Sequence[RunProgress]:
        items, self.items = self.items, []
        return items

    def settled(self, results: Sequence[tuple[RunProgress, Result[bool]]]) -> None:
        self.results.update((item.handler_id, result) for item, result in results)
        self.done.set()

    def kept(self, payloads: Sequence[RunProgress], error: StoreUnavailableError) -> None:
        raise AssertionError(f"the memory store is never unavailable: {error}")


async def test_the_default_progress_feed_writes_a_batch_through_save_progress() -> None:
    store = PlainStore()
    mine = handler("mine", owner_id="me")
    theirs = handler("theirs", owner_id="them")
    for row in (mine, theirs):
        await store.create_handler(row)
    stolen = progress(theirs, owner_id="me")  # not the owner: fenced off
    source = OneBatch([progress(mine, events=[event(0)]), stolen])
    store.progress_feed(source).poke()
    await asyncio.wait_for(source.done.wait(), 10)
    assert source.results == {"mine": True, "theirs": False}
    assert [e.sequence for e in await store.read_events("run-mine")] == [0]
    await store.close_progress_writer()
    await store.close_progress_writer()  # idempotent

"""Memory per run waiting for input, live and released: ``python -m benchmarks.waiting_memory``.

    python -m benchmarks.waiting_memory [--runs 500] [--target memory|sqlite] [--idle-timeout 15]

In this process, the run service starts ``--runs`` runs of a workflow that
asks a question and waits for the answer. Once every run has written that it
waits, the live Python heap (``tracemalloc``, after a full collection) is
compared with the one before the runs started: that is the cost of a live
waiting run. After ``idle_timeout`` the runs are released from memory (their
checkpoint stays in the store): the heap is measured again, for the cost of a
released one. Then every run gets its answer and must complete.

With the memory store, what the store itself keeps of each run (its row,
checkpoint and event log) is in the figures; with SQLite it is on disk (the
database's own page cache is not a Python object and is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path

from workflows import Context, Workflow, step
from workflows.events import HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent

from llama_workflows_asgi import (
    MemoryWorkflowStore,
    ServiceConfig,
    SqlAlchemyWorkflowStore,
    WorkflowService,
)
from llama_workflows_asgi.service.live import LiveRun
from llama_workflows_asgi.store.base import AbstractWorkflowStore


class Question(InputRequiredEvent):
    prompt: str


class Answer(HumanResponseEvent):
    text: str


class AskWorkflow(Workflow):
    """Asks one question, then finishes with the answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> Question:
        return Question(prompt="what is your name?")

    @step
    async def done(self, ev: Answer) -> StopEvent:
        return StopEvent(result=ev.text)


def _heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


async def measure(store: AbstractWorkflowStore, runs: int, idle_timeout: float) -> tuple[int, int]:
    """Bytes per live waiting run and per released run."""
    service = WorkflowService(store, config=ServiceConfig(idle_timeout=idle_timeout))
    service.add_workflow("ask", AskWorkflow())
    async with service.running_context():
        live = service._runs  # private on purpose: nothing public lists the live runs
        await _answered(service, live, await _started(service, live, 20))  # warm up
        before = _heap()
        ids = await _started(service, live, runs)
        await service._writer.drain()  # every run has written that it waits
        live_bytes = _heap() - before
        if len(live) != runs:
            raise RuntimeError("runs were released while measured: raise --idle-timeout")
        await _until(lambda: not live, "every run is released", timeout=idle_timeout * 10 + 60)
        released_bytes = _heap() - before
        await _answered(service, live, ids)
    return live_bytes // runs, released_bytes // runs


async def _started(service: WorkflowService, live: Mapping[str, LiveRun], runs: int) -> list[str]:
    """Start ``runs`` runs and return their handler ids once each waits for its answer."""
    started = await asyncio.gather(*(service.start_run("ask", StartEvent()) for _ in range(runs)))
    ids = [handler.handler_id for handler in started]

    def waiting() -> bool:
        if not all(i in live for i in ids):
            raise RuntimeError("a run was released before all were waiting: raise --idle-timeout")
        return all(live[i].idle_since is not None for i in ids)

    await _until(waiting, "every run waits for its answer")
    return ids


async def _answered(service: WorkflowService, live: Mapping[str, LiveRun], ids: list[str]) -> None:
    """Answer every run and wait until each has completed."""
    for handler_id in ids:
        await service.send_event(handler_id, Answer(text="Ada"))
    for handler_id in ids:
        done = await service.wait_for(handler_id)
        assert done.status == "completed", done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--target", default="memory", choices=["memory", "sqlite"])
    parser.add_argument("--idle-timeout", type=float, default=15.0)
    args = parser.parse_args()
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        store = (
            MemoryWorkflowStore()
            if args.target == "memory"
            else SqlAlchemyWorkflowStore(url, migrate=True)
        )
        live, released = asyncio.run(measure(store, args.runs, args.idle_timeout))
    print(
        f"{args.target}: {args.runs} waiting runs: {live / 1024:.1f} KB per live run, "
        f"{released / 1024:.1f} KB per released run"
    )


if __name__ == "__main__":
    main()

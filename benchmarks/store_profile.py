"""Where a durable run's time goes in the store path: runs in one process, no HTTP.

    python -m benchmarks.store_profile [--store sqlite|postgres|memory]
        [--workload echo|chain|stream] [--runs 2000] [--concurrency 16]
        [--profile out.prof] [--top 25]

Runs ``--runs`` runs of the workload through ``WorkflowService.run`` with
``--concurrency`` at a time, on a fresh store, and prints runs/s, process CPU
ms per run, SQL statements and commits per run (counted by
``before_cursor_execute`` and ``commit`` hooks on the store's write and read
engines), and with ``--profile`` a cProfile of the measured loop (top entries
by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from sqlalchemy import event
from workflows import Workflow
from workflows.events import StartEvent

from benchmarks.pg_round_trips import RoundTrips
from benchmarks.workloads import ChainWorkflow, EchoWorkflow, StreamWorkflow
from llama_workflows_asgi import (
    MemoryWorkflowStore,
    ServiceConfig,
    SqlAlchemyWorkflowStore,
    WorkflowService,
)
from llama_workflows_asgi.store import AbstractWorkflowStore

WORKFLOWS: dict[str, tuple[type[Workflow], dict[str, Any]]] = {
    "echo": (EchoWorkflow, {"text": "hi"}),
    "chain": (ChainWorkflow, {}),
    "stream": (StreamWorkflow, {"count": 1000}),
}


class Statements:
    """Counts what the store sends to its database, by the statement's first word."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.commits = 0

    def watch(self, store: AbstractWorkflowStore) -> None:
        if not isinstance(store, SqlAlchemyWorkflowStore):
            return
        engines = {store.write_engine.sync_engine, store.read_engine.sync_engine}
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._statement)
            event.listen(engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.kinds[statement.split(None, 1)[0].upper()] += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def reset(self) -> None:
        self.kinds.clear()
        self.commits = 0


async def open_store(kind: str, stack: AsyncExitStack) -> AbstractWorkflowStore:
    if kind == "memory":
        return MemoryWorkflowStore()
    if kind == "sqlite":
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        return SqlAlchemyWorkflowStore(f"sqlite:///{Path(folder) / 'profile.db'}")
    from benchmarks.postgres import durable_postgres

    server = stack.enter_context(durable_postgres())
    return SqlAlchemyWorkflowStore(server.create_database(), migrate=True)


async def run_many(service: WorkflowService, workload: str, runs: int, concurrency: int) -> None:
    _, body = WORKFLOWS[workload]
    left = iter(range(runs))

    async def worker() -> None:
        for _ in left:
            done = await service.run(workload, StartEvent(**body))
            assert done.status == "completed", done.error

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "postgres", "memory"])
    parser.add_argument("--workload", default="echo", choices=sorted(WORKFLOWS))
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    async with AsyncExitStack() as stack:
        store = await open_store(args.store, stack)
        service = WorkflowService(store, config=ServiceConfig())
        workflow_class, _ = WORKFLOWS[args.workload]
        service.add_workflow(args.workload, workflow_class(timeout=None))
        await stack.enter_async_context(service.running_context())
        counts = Statements()
        counts.watch(store)
        trips = RoundTrips()
        trips.watch(store)
        await run_many(service, args.workload, 100, args.concurrency)  # warm-up
        counts.reset()
        trips.reset()
        profiler = cProfile.Profile() if args.profile else None
        began, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        await run_many(service, args.workload, args.runs, args.concurrency)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        trips.close()
    n = args.runs
    print(f"{args.store} {args.workload}: {n / wall:.1f} runs/s, {cpu * 1000 / n:.2f} cpu ms/run")
    if counts.kinds:
        per_run = {kind: round(count / n, 2) for kind, count in counts.kinds.most_common()}
        total = sum(counts.kinds.values()) / n
        print(f"statements/run {total:.2f} {per_run}; commits/run {counts.commits / n:.3f}")
    if trips.batches:
        print(trips.report(n))
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    asyncio.run(main())

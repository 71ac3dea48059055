"""Where a run's CPU goes in the run service: ``python -m benchmarks.profile_service``.

Runs ``--runs`` runs of one workload (``echo`` or ``chain``), ``--concurrency``
at a time, through ``WorkflowService.run()`` on the memory store, in this
process and without HTTP, then prints the process CPU time per run and (with
``--profile``) the cProfile entries with the most own time and the most
cumulative time. ``--engine`` runs the same loop on ``workflow.run()`` alone
(no service): the floor the service's own cost sits on. Use it before and
after a change, back to back: on a shared machine CPU time per run moves much
less than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def _loop(
    runs: int,
    concurrency: int,
    once: Callable[[], Awaitable[Any]],
    profiler: cProfile.Profile | None,
) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await once()

    await worker(50)  # warm up (imports, caches): not measured
    if profiler is not None:
        profiler.enable()
    began = time.process_time()
    per = runs // concurrency
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    spent = time.process_time() - began
    if profiler is not None:
        profiler.disable()
    return spent * 1000 / (per * concurrency)


async def _measure(
    workload: str, runs: int, concurrency: int, engine: bool, profiler: cProfile.Profile | None
) -> float:
    from workflows.events import StartEvent

    from benchmarks.workloads import workflows
    from llama_workflows_asgi import MemoryWorkflowStore, WorkflowService

    workflow = workflows()[workload]
    if engine:

        async def bare() -> Any:
            return await workflow.run(start_event=StartEvent(text="hi"))  # type: ignore[call-arg]

        return await _loop(runs, concurrency, bare, profiler)
    service = WorkflowService(MemoryWorkflowStore())
    service.add_workflow(workload, workflow)
    async with service.running_context():

        async def durable() -> Any:
            done = await service.run(workload, StartEvent(text="hi"))  # type: ignore[call-arg]
            assert done.status == "completed", done
            return done

        return await _loop(runs, concurrency, durable, profiler)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workload", default="echo", choices=["echo", "chain"])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--engine", action="store_true", help="workflow.run() alone")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", help="also write the profile to this file (pstats)")
    args = parser.parse_args()
    # CPU time, not wall time: on a shared machine the wall clock counts the neighbours.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    cpu = asyncio.run(_measure(args.workload, args.runs, args.concurrency, args.engine, profiler))
    if profiler is None:
        print(f"{args.workload}: {cpu:.3f} cpu ms/run")
        return
    print(f"{args.workload}: {cpu:.3f} cpu ms/run (under the profiler)")
    if args.save:
        profiler.dump_stats(args.save)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(args.top)
        print(out.getvalue())


if __name__ == "__main__":
    main()

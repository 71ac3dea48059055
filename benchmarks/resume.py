"""Resume costs: flat in a run's history, and one batch pass for many runs.

    python -m benchmarks.resume [--steps 10,10000] [--runs 1000] [--postgres]

1. A run executes N steps, then waits for input; the service stops (its last
   checkpoint written). A new service on the same database gets the answer:
   we time from the event to the run's completion (claim, restore, finish) and
   report the checkpoint's size. N = 10 and N = 10,000 should cost the same.
2. ``--runs`` runs are in flight when the service stops. A new service starts:
   we time until all of them execute again, and count the SQL statements the
   adoption took (a bounded number of batches, not one query per run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from workflows import Context, Workflow, step
from workflows.events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent

from benchmarks.postgres import durable_postgres
from llama_workflows_asgi import SqlAlchemyWorkflowStore
from llama_workflows_asgi.service import ServiceConfig, WorkflowService


class Step(Event):
    n: int


class Question(InputRequiredEvent):
    text: str


class Answer(HumanResponseEvent):
    text: str


class LongThenWait(Workflow):
    """``steps`` steps (each adding to the state store), then waits for an Answer."""

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Step:
        await ctx.store.set("goal", int(ev.get("steps")))
        return Step(n=0)

    @step
    async def advance(self, ctx: Context, ev: Step) -> Step | Question:
        await ctx.store.set("done", ev.n + 1)
        if ev.n + 1 >= await ctx.store.get("goal"):
            return Question(text="go on?")
        return Step(n=ev.n + 1)

    @step
    async def finish(self, ctx: Context, ev: Answer) -> StopEvent:
        return StopEvent(result={"done": await ctx.store.get("done"), "answer": ev.text})


class Sleeper(Workflow):
    @step
    async def sleep(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(3600)
        return StopEvent(result="woke")


def service(url: str) -> WorkflowService:
    config = ServiceConfig(idle_timeout=None, claim_batch_size=500)
    svc = WorkflowService(SqlAlchemyWorkflowStore(url, migrate=True), config=config)
    svc.add_workflow("long", LongThenWait(timeout=None))
    svc.add_workflow("sleeper", Sleeper(timeout=None))
    return svc


async def resume_after(url: str, steps: int) -> tuple[float, int]:
    """(seconds from answer to completion after a restart, checkpoint bytes)."""
    first = service(url)
    await first.start()
    handler = await first.start_run("long", StartEvent(steps=steps))
    while (await first.get(handler.handler_id)).idle_since is None:  # noqa: ASYNC110 - polls the store
        await asyncio.sleep(0.05)
    await first.stop()

    second = service(url)
    await second.start()
    [row] = await second.store.query(_by_id(handler.handler_id))
    size = len(str(row.ctx))
    started = time.perf_counter()
    await second.send_event(handler.handler_id, Answer(text="yes"))
    done = await second.wait_for(handler.handler_id)
    elapsed = time.perf_counter() - started
    await second.stop()
    assert done.result is not None
    assert done.result.result["done"] == steps
    return elapsed, size


def _by_id(handler_id: str) -> Any:
    from llama_workflows_asgi import HandlerQuery

    return HandlerQuery(handler_id_in=[handler_id])


@contextmanager
def counting_statements() -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def adopt_many(url: str, runs: int) -> tuple[float, dict[str, int]]:
    """(seconds until ``runs`` interrupted runs execute again, SQL statements by verb)."""
    first = service(url)
    await first.start()
    for _ in range(runs):
        await first.start_run("sleeper")
    await asyncio.sleep(1.0)  # every run checkpointed mid-step
    await first.stop()

    second = service(url)
    with counting_statements() as statements:
        started = time.perf_counter()
        await second.start()
        while len(second._runs) < runs:  # noqa: ASYNC110 - nothing to wait on but the count
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        await second._supervisor.first_round.wait()
        counts = {verb: statements.count(verb) for verb in sorted(set(statements))}
    await second.stop()
    return elapsed, counts


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="10,10000")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, durable_postgres(enabled=args.postgres) as pg:
        databases = {"sqlite": lambda: f"sqlite+aiosqlite:///{scratch}/r{time.monotonic_ns()}.db"}
        if args.postgres:
            databases["postgres"] = pg.create_database
        for name, fresh in databases.items():
            print(f"\n{name}: resume after N steps (answer -> completed, median of {args.repeat})")
            for steps in map(int, args.steps.split(",")):
                samples = [await resume_after(fresh(), steps) for _ in range(args.repeat)]
                median = statistics.median(s for s, _ in samples)
                print(
                    f"  N={steps:>6}: {median * 1000:7.1f} ms   checkpoint {samples[0][1]:>6} bytes"
                )
            elapsed, counts = await adopt_many(fresh(), args.runs)
            print(
                f"{name}: {args.runs} interrupted runs executing again {elapsed:.2f} s after start"
            )
            print(f"  SQL statements during startup and adoption: {counts}")


if __name__ == "__main__":
    asyncio.run(main())

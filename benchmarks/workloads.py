"""The workflows every benchmarked server runs (identical for all of them)."""

from __future__ import annotations

import asyncio

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent


class EchoWorkflow(Workflow):
    """One step: echo the start event's ``text``."""

    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.get("text", ""))


class Link(Event):
    n: int


class ChainWorkflow(Workflow):
    """Twenty steps in a row."""

    @step
    async def first(self, ev: StartEvent) -> Link:
        return Link(n=1)

    @step
    async def link(self, ev: Link) -> Link | StopEvent:
        if ev.n >= 19:
            return StopEvent(result=ev.n + 1)
        return Link(n=ev.n + 1)


class Job(Event):
    n: int


class Done(Event):
    n: int


class FanOutWorkflow(Workflow):
    """Ten parallel workers, then a join."""

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Job | None:
        for n in range(10):
            ctx.send_event(Job(n=n))
        return None

    @step(num_workers=10)
    async def work(self, ev: Job) -> Done:
        return Done(n=ev.n * 2)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done] * 10)
        if done is None:
            return None
        return StopEvent(result=sum(d.n for d in done))


class Tick(Event):
    i: int


class StreamWorkflow(Workflow):
    """Writes ``count`` events to the stream (default 1000)."""

    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> StopEvent:
        count = int(ev.get("count", 1000))
        for i in range(count):
            ctx.write_event_to_stream(Tick(i=i))
        return StopEvent(result=count)


def workflows() -> dict[str, Workflow]:
    """Fresh instances, by the names the load generator uses."""
    return {
        "echo": EchoWorkflow(timeout=None),
        "chain": ChainWorkflow(timeout=None),
        "fanout": FanOutWorkflow(timeout=None),
        "stream": StreamWorkflow(timeout=None),
        "drip": DripWorkflow(timeout=None),
    }


class DripWorkflow(Workflow):
    """Writes ``count`` events, one every ``interval`` seconds (a long-lived stream)."""

    @step
    async def drip(self, ctx: Context, ev: StartEvent) -> StopEvent:
        count, interval = int(ev.get("count", 200)), float(ev.get("interval", 0.3))
        for i in range(count):
            await asyncio.sleep(interval)
            ctx.write_event_to_stream(Tick(i=i))
        return StopEvent(result=count)

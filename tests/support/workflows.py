"""Workflows used across the HTTP and durability tests."""

from __future__ import annotations

import asyncio

from workflows import Context, Workflow, step
from workflows.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
)


class ProgressEvent(Event):
    msg: str
    i: int


class GreetWorkflow(Workflow):
    """StartEvent(name) -> three ProgressEvents -> StopEvent(result={"greeting": ...})."""

    @step
    async def greet(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(3):
            ctx.write_event_to_stream(ProgressEvent(msg=f"step {i}", i=i))
        return StopEvent(result={"greeting": f"Hello, {ev.get('name', 'World')}!"})


class MyStart(StartEvent):
    topic: str
    count: int = 1


class MyStop(StopEvent):
    answer: int
    topic: str


class CustomWorkflow(Workflow):
    """Custom start and stop classes: MyStart(topic, count) -> MyStop(answer, topic)."""

    @step
    async def go(self, ev: MyStart) -> MyStop:
        return MyStop(answer=42 * ev.count, topic=ev.topic)


class AskEvent(InputRequiredEvent):
    question: str


class AnswerEvent(HumanResponseEvent):
    answer: str


class HitlWorkflow(Workflow):
    """Asks a question (AskEvent) and finishes with the AnswerEvent it gets back."""

    @step
    async def ask(self, ev: StartEvent) -> AskEvent:
        return AskEvent(question="what is your name?")

    @step
    async def done(self, ev: AnswerEvent) -> StopEvent:
        return StopEvent(result=f"got {ev.answer}")


class FailWorkflow(Workflow):
    """Raises ValueError('kaboom')."""

    @step
    async def boom(self, ev: StartEvent) -> StopEvent:
        raise ValueError("kaboom")


class SlowWorkflow(Workflow):
    """Sleeps ``seconds`` (default 30), then finishes with "slept"."""

    @step
    async def slow(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(float(ev.get("seconds", 30)))
        return StopEvent(result="slept")


class CounterWorkflow(Workflow):
    """Increments a counter in the state store: shows state carried across runs."""

    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["count"] = int(state.get("count", 0)) + 1
            value = state["count"]
        return StopEvent(result={"count": value})


def make_workflows() -> dict[str, Workflow]:
    """Fresh instances of every test workflow, by the names the tests use."""
    return {
        "greet": GreetWorkflow(),
        "custom": CustomWorkflow(),
        "hitl": HitlWorkflow(timeout=None),
        "fail": FailWorkflow(),
        "slow": SlowWorkflow(timeout=None),
        "counter": CounterWorkflow(),
    }

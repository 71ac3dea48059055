"""Workflows used across the HTTP and durability tests."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field
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


class QuestionEvent(InputRequiredEvent):
    """Streamed while a step waits: declared nowhere (not in any step signature)."""

    prompt: str


class DecisionEvent(Event):
    """Awaited with ``ctx.wait_for_event``: callers may send it once it is an additional event."""

    approved: bool
    note: str = ""


class ReviewState(BaseModel):
    """A typed state model."""

    asked: int = 0
    notes: list[str] = Field(default_factory=list)


class ReviewDone(StopEvent):
    approved: bool
    notes: list[str]


class WaiterWorkflow(Workflow):
    """The documented ``ctx.wait_for_event`` pattern, with a typed state and a custom stop.

    Register with ``additional_events=[DecisionEvent]``.
    """

    @step
    async def review(self, ctx: Context[ReviewState], ev: StartEvent) -> ReviewDone:
        async with ctx.store.edit_state() as state:
            state.asked += 1
        decision = await ctx.wait_for_event(
            DecisionEvent,
            waiter_event=QuestionEvent(prompt=f"approve {ev.get('item', 'it')}?"),
            waiter_id="decision",
            timeout=None,
        )
        async with ctx.store.edit_state() as state:
            state.notes.append(decision.note)
            notes = list(state.notes)
        return ReviewDone(approved=decision.approved, notes=notes)


def pattern_workflows() -> dict[str, tuple[Workflow, list[type[Event]]]]:
    """The documented waiting patterns, by name, with the additional events each needs."""
    return {
        "hitl": (HitlWorkflow(timeout=None), []),
        "waiter": (WaiterWorkflow(timeout=None), [DecisionEvent]),
    }


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

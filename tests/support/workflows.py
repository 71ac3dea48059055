"""Workflows used across the HTTP and durability tests."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field, create_model
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


class Opaque:
    """A value no serializer knows."""


class Note(Event):
    text: str = ""


LongNamedEvent: type[Event] = create_model("L" * 300, __base__=Event)
"""An event whose class name (300 characters) is too long for the event log's column."""


class FaultInput(StartEvent):
    mode: str
    pause: float = 0.2


def nested_list(depth: int) -> list[object]:
    """``[[...[1]...]]``, ``depth`` lists deep."""
    value: list[object] = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


class FaultyWorkflow(Workflow):
    """Produces, by ``mode``, something that cannot be saved, or raises what steps must not.

    Modes: ``event``, ``state``, ``result``, ``deep_state`` (unserializable or
    too deep), ``surrogate`` (an event no database can store), ``long_name``
    (an event type too long for PostgreSQL's column), ``keyboard``,
    ``systemexit``, ``cancelled`` (raised by the step). The step then waits
    ``pause`` seconds and would finish, so a run that ends ``completed`` was
    not stopped.
    """

    @step
    async def misbehave(self, ctx: Context, ev: FaultInput) -> StopEvent:
        mode = ev.mode
        if mode == "event":
            ctx.write_event_to_stream(Note(text="opaque", opaque=Opaque()))
        elif mode == "surrogate":
            ctx.write_event_to_stream(Note(text="\ud800"))
        elif mode == "long_name":
            ctx.write_event_to_stream(LongNamedEvent())
        elif mode == "state":
            await ctx.store.set("opaque", Opaque())
        elif mode == "deep_state":
            await ctx.store.set("deep", nested_list(3000))
        elif mode == "keyboard":
            raise KeyboardInterrupt
        elif mode == "systemexit":
            raise SystemExit(3)
        elif mode == "cancelled":
            raise asyncio.CancelledError
        await asyncio.sleep(ev.pause)
        return StopEvent(result=Opaque() if mode == "result" else "finished")


FAULTS = ("event", "state", "result", "deep_state", "keyboard", "systemexit", "cancelled")
"""FaultyWorkflow modes every store must survive (``surrogate`` only SQL stores refuse)."""

"""A five-step workflow whose third step fails on its first attempt(s): for retry tests."""

from __future__ import annotations

from typing import Any

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent


class Done1(Event):
    n: int


class Done2(Event):
    n: int


class Done3(Event):
    n: int


class Done4(Event):
    n: int


class Note(Event):
    """Written to the stream by every step, so a default stream shows progress."""

    step: str


class FiveSteps(Workflow):
    """s1 -> s2 -> s3 -> s4 -> s5; ``s3`` raises while ``failures`` remain.

    ``journal`` records every step execution, in order. ``s3`` also counts its
    attempts in the state store, which a retry carries over.
    """

    def __init__(self, failures: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.journal: list[str] = []

    def _ran(self, ctx: Context, name: str) -> None:
        self.journal.append(name)
        ctx.write_event_to_stream(Note(step=name))

    @step
    async def s1(self, ctx: Context, ev: StartEvent) -> Done1:
        self._ran(ctx, "s1")
        return Done1(n=1)

    @step
    async def s2(self, ctx: Context, ev: Done1) -> Done2:
        self._ran(ctx, "s2")
        return Done2(n=ev.n + 1)

    @step
    async def s3(self, ctx: Context, ev: Done2) -> Done3:
        self._ran(ctx, "s3")
        async with ctx.store.edit_state() as state:
            state["attempts"] = int(state.get("attempts", 0)) + 1
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("s3 is not ready yet")
        return Done3(n=ev.n + 1)

    @step
    async def s4(self, ctx: Context, ev: Done3) -> Done4:
        self._ran(ctx, "s4")
        return Done4(n=ev.n + 1)

    @step
    async def s5(self, ctx: Context, ev: Done4) -> StopEvent:
        self._ran(ctx, "s5")
        attempts = await ctx.store.get("attempts")
        return StopEvent(result={"n": ev.n + 1, "attempts": attempts})

"""``_aio.first_set``: wake on any event or at the timeout, and never swallow a cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from llama_workflows_asgi._aio import first_set


async def test_returns_once_any_event_is_set() -> None:
    one, two = asyncio.Event(), asyncio.Event()
    waiting = asyncio.ensure_future(first_set([one, two], timeout=60))
    await asyncio.sleep(0)
    assert not waiting.done()
    two.set()
    await asyncio.wait_for(waiting, 5)
    assert not one.is_set()


async def test_returns_at_the_timeout_when_nothing_is_set() -> None:
    began = time.monotonic()
    await first_set([asyncio.Event()], timeout=0.05)
    assert time.monotonic() - began >= 0.05


@pytest.mark.parametrize("rounds", range(20))
async def test_a_cancellation_as_the_event_is_set_ends_the_waiting_loop(rounds: int) -> None:
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await first_set([event], timeout=60)
            event.clear()

    task = asyncio.ensure_future(loop())
    for _ in range(rounds % 4):  # the cancellation lands at different points of the wakeup
        await asyncio.sleep(0)
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)

"""``service.stopping``: the graceful stop as the waits see it."""

from __future__ import annotations

import asyncio

import pytest

from llama_workflows_asgi.errors import StoreUnavailableError
from llama_workflows_asgi.service.stopping import StopSignal

pytestmark = pytest.mark.timeout(10)


async def test_a_pause_ends_as_soon_as_the_stop_begins() -> None:
    signal = StopSignal()
    signal.reset()
    pause = asyncio.ensure_future(signal.pause(60))
    await asyncio.sleep(0)  # the pause is waiting
    assert not pause.done()
    signal.begin()
    await asyncio.wait_for(pause, 5)
    assert signal.draining


async def test_once_stopping_new_work_is_refused_with_a_short_retry() -> None:
    signal = StopSignal()
    signal.reset()
    signal.refuse_if_stopping()  # not stopping: nothing happens
    signal.begin()
    with pytest.raises(StoreUnavailableError) as refused:
        signal.refuse_if_stopping()
    assert refused.value.retry_after == 1
    await asyncio.wait_for(signal.pause(60), 5)  # later pauses end at once too


async def test_reset_arms_the_signal_again_for_a_restart() -> None:
    signal = StopSignal()
    signal.reset()
    signal.begin()
    signal.reset()
    assert not signal.draining
    pause = asyncio.ensure_future(signal.pause(60))
    await asyncio.sleep(0)
    assert not pause.done()
    pause.cancel()

"""Waiting on events with a timeout, in a way a cancellation always ends.

Before Python 3.12, ``asyncio.wait_for(event.wait(), timeout)`` may swallow a
cancellation that arrives just as the event is set: the waiting task goes on,
and whoever cancelled it to stop it (``task.cancel(); await task``) waits
forever. ``asyncio.wait`` does not: the cancellation always reaches the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


async def first_set(events: Sequence[asyncio.Event], timeout: float) -> None:
    """Return once any of ``events`` is set, or after ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

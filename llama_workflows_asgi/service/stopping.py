"""The graceful stop as the waits see it: whether it began, and sleeps that end when it does."""

from __future__ import annotations

import asyncio
import contextlib

from ..errors import StoreUnavailableError


class StopSignal:
    """Set once a graceful stop begins; streams, waits and polls end with it."""

    def __init__(self) -> None:
        self.draining = False
        self._event: asyncio.Event | None = None

    def reset(self) -> None:
        """Arm the signal for a (re)started service."""
        self.draining = False
        self._event = asyncio.Event()

    def begin(self) -> None:
        """A graceful stop begins: wake every pause and refuse new work."""
        self.draining = True
        assert self._event is not None
        self._event.set()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a graceful stop begins."""
        if self._event is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)

    def refuse_if_stopping(self) -> None:
        """Raise ``StoreUnavailableError`` (503, retry soon) once stopping began."""
        if self.draining:
            raise StoreUnavailableError(
                "The server is shutting down; its runs continue after it", retry_after=1
            )

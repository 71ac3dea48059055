"""Keeping background tasks alive: log a failure once, restart with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0


class FailureLog:
    """Logs a recurring failure once, with its traceback, until it clears.

    A loop retrying every second must not fill the log with the same
    traceback; a new kind of failure is logged again.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._last: tuple[type[BaseException], str] | None = None

    def failed(self, exc: BaseException) -> None:
        """Record a failure: logged with its traceback unless it repeats the last one."""
        key = (type(exc), str(exc))
        if key == self._last:
            self._logger.debug("%s failed again: %s", self._what, exc)
            return
        self._last = key
        self._logger.error("%s failed: %s", self._what, exc, exc_info=exc)

    def cleared(self) -> None:
        """The work succeeded: the next failure is news again."""
        if self._last is not None:
            self._logger.info("%s works again", self._what)
            self._last = None


def start_guarded(
    name: str, body: Callable[[], Awaitable[None]], logger: logging.Logger
) -> asyncio.Task[None]:
    """Run ``body`` in a task that restarts it (with backoff) whenever it crashes.

    ``body`` is meant to loop forever; cancelling the task stops it. A crash is
    a bug, not an outage (outages are handled inside the loops): it is logged
    with its traceback, and the loop starts over, so the service never loses a
    background task silently.
    """
    failures = FailureLog(logger, f"background task {name}")

    async def guarded() -> None:
        backoff = _FIRST_BACKOFF
        while True:
            try:
                await body()
                return
            except Exception as exc:
                failures.failed(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    return asyncio.create_task(guarded(), name=name)

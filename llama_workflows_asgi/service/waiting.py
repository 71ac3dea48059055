"""Waiting for a run to finish: until its outcome is written, wherever it runs.

A run live here is awaited on its ``finished`` event, and its final row is
what its terminal write left; a run elsewhere is polled in the store every
``stream_poll_interval``. A graceful stop ends every wait (503): the caller
asks again, of whichever process owns the run next.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore, PersistentHandler
from .config import ServiceConfig
from .live import LiveRun
from .live_runs import LiveRuns
from .reading import read_handler
from .stopping import StopSignal


class Waiter:
    """Waits until handlers are finished and their outcome is written."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        live: LiveRuns,
        config: ServiceConfig,
        stop: StopSignal,
    ) -> None:
        self._store = store
        self._live = live
        self._config = config
        self._stop = stop

    async def wait_for(
        self, handler_id: str, principal_in: list[str | None] | None
    ) -> PersistentHandler:
        """The finished handler (one of ``principal_in``'s; ``None``: anyone's).

        Raises ``StoreUnavailableError`` if the run ended here but its outcome
        cannot be written for now (it is kept, and written once the store is back).
        """
        while True:
            self._stop.refuse_if_stopping()
            live = self._live.get(handler_id)
            # Another caller's run is not waited for: the store read below reports it missing.
            if live is not None and (principal_in is None or live.row.principal in principal_in):
                await self._written(live)
                if live.final is not None:
                    return live.final  # exactly what was just written
            row = await read_handler(self._store, handler_id, principal_in)
            if row.is_terminal:
                return row
            await self._stop.pause(self._config.stream_poll_interval)

    async def _written(self, live: LiveRun) -> None:
        writer = self._live.writer
        while not live.finished.is_set():
            await _wait_set(live.finished, self._config.poll_interval)
            self._stop.refuse_if_stopping()  # a release that cannot be written must not hold it
            error = writer.last_error
            if not live.finished.is_set() and live.outcome is not None and error is not None:
                raise StoreUnavailableError(
                    f"The run finished but its outcome is not written yet: {error}"
                )


async def _wait_set(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set, at most ``timeout`` seconds."""
    if sys.version_info >= (3, 11):
        # Unlike wait_for before 3.12, no task is made to wait in: one per run saved.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        return
    with contextlib.suppress(asyncio.TimeoutError):  # pragma: no cover - Python 3.10
        await asyncio.wait_for(event.wait(), timeout)

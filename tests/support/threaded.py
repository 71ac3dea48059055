"""Serving an ASGI app with uvicorn on a background thread, for synchronous test code.

Synchronous clients (``requests``, as schemathesis uses) would block a test's own
event loop; here the server runs on a loop of its own, and :meth:`ThreadedServer.call`
runs a coroutine on that loop (to inspect the app's service or store safely).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from tests.support.servers import serving

T = TypeVar("T")


class ThreadedServer:
    """``with ThreadedServer(app) as server:`` serves ``app`` at ``server.url``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started: Future[str] = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="uvicorn-test-server", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self.url = self._started.result(timeout=30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the server did not shut down"

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coroutine`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serving(self.app) as url:
            self._started.set_result(url)
            await self._stop.wait()

"""Learning of SIGINT and SIGTERM before the server waits for open connections.

Uvicorn (``Server.capture_signals``, installed before the lifespan starts) turns
SIGINT and SIGTERM into ``should_exit``; its shutdown then waits for every open
connection to close before it runs the lifespan shutdown. An event stream never
closes by itself, so the service must hear of the signal first. While the
router's lifespan runs, :func:`chained_stop_signals` puts a handler in front of
whatever handler the process had (uvicorn's, or any other server's): it begins
the service's graceful stop, then passes the signal on, so the server's own
shutdown proceeds as usual and finds the streams already ended.

A repeated signal is passed on only once the stop has released the runs: to
uvicorn a second Ctrl+C means "skip the lifespan shutdown", which would leave
tasks behind; the stop is bounded (``stop_timeout``), so nothing waits long.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)

SignalHandler = Callable[[int, FrameType | None], Any]


@contextlib.contextmanager
def chained_stop_signals(begin: Callable[[], None], settled: Callable[[], bool]) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM call ``begin`` (on the running loop) before their old handler.

    Does nothing outside the main thread (signals cannot be handled there) and
    for a signal the process ignores. ``settled`` tells whether a repeated
    signal may be passed on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    seen: list[int] = []
    active = [True]

    def handler(sig: int, frame: FrameType | None) -> None:
        if not active[0]:
            # Left in a chain by a later handler after this block ended.
            _pass_on(sig, frame, previous[sig])
            return
        first = not seen
        seen.append(sig)
        loop.call_soon_threadsafe(begin)
        if first or settled():
            _pass_on(sig, frame, previous[sig])

    for sig in STOP_SIGNALS:
        old = signal.getsignal(sig)
        if old is signal.SIG_IGN:
            continue
        previous[sig] = old
        signal.signal(sig, handler)
    try:
        yield
    finally:
        active[0] = False
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, old)


def _pass_on(sig: int, frame: FrameType | None, old: Any) -> None:
    if callable(old):
        old(sig, frame)
    elif old == signal.SIG_DFL or old is None:
        # The process had no handler: do what the signal does by default.
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)


@contextlib.contextmanager
def absorbed_stop_signals() -> Iterator[None]:
    """Swallow the SIGINT/SIGTERM a server re-raises once its graceful shutdown is done.

    Uvicorn re-raises the signal that stopped it, with the handlers it found
    restored; under ``asyncio.run`` that turns a clean Ctrl+C into a
    ``KeyboardInterrupt`` traceback. Inside this block the handlers it finds
    (and restores) are no-ops, so ``serve()`` simply returns.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _ignore) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ignore(sig: int, frame: FrameType | None) -> None:
    return None

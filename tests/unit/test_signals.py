"""``_signals``: the service hears SIGINT/SIGTERM before the server's own handler runs."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

from llama_workflows_asgi._signals import absorbed_stop_signals, chained_stop_signals


async def test_a_signal_begins_the_stop_then_reaches_the_old_handler() -> None:
    received: list[int] = []
    begun: list[str] = []
    settled = [False]

    def server_handler(sig: int, frame: FrameType | None) -> None:
        received.append(sig)

    old = signal.signal(signal.SIGTERM, server_handler)
    try:
        with chained_stop_signals(lambda: begun.append("stop"), lambda: settled[0]):
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(0)
            assert begun == ["stop"]
            assert received == [signal.SIGTERM]
            # Repeated before the runs are released: kept from the server.
            signal.raise_signal(signal.SIGTERM)
            assert received == [signal.SIGTERM]
            settled[0] = True
            signal.raise_signal(signal.SIGTERM)
            assert received == [signal.SIGTERM, signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is server_handler
    finally:
        signal.signal(signal.SIGTERM, old)


async def test_an_ignored_signal_stays_ignored() -> None:
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with chained_stop_signals(lambda: None, lambda: True):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_re_raised_signal_is_absorbed_and_handlers_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with absorbed_stop_signals():
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is before

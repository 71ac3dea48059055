"""SSE heartbeats: what a stream sends when its run has been quiet for a while.

Proxies and load balancers close connections that stay silent; a comment
frame every ``interval`` seconds of silence keeps them open. Only events the
client sees count as traffic: hidden (internal) events do not postpone it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from .. import telemetry
from ..service import EventStream, StoredEvent


class Heartbeat:
    """Yielded by :func:`with_heartbeats` when nothing was sent for an interval."""


HEARTBEAT = Heartbeat()

_NO_HEARTBEAT_WAIT = 60.0  # how long one read waits when no heartbeat is due


async def with_heartbeats(
    stream: EventStream, interval: float | None
) -> AsyncIterator[list[StoredEvent] | Heartbeat]:
    """The stream's batches, with ``HEARTBEAT`` after ``interval`` seconds without one.

    ``None`` sends no heartbeats. The stream is closed when this ends.
    """
    with telemetry.stream_open():
        try:
            quiet_since = time.monotonic()
            while True:
                batch = await stream.next_batch(_wait(interval, quiet_since))
                if batch is None:
                    return
                if batch:
                    yield batch
                    quiet_since = time.monotonic()
                elif interval is not None and time.monotonic() - quiet_since >= interval:
                    yield HEARTBEAT
                    quiet_since = time.monotonic()
        finally:
            stream.close()


def _wait(interval: float | None, quiet_since: float) -> float:
    if interval is None:
        return _NO_HEARTBEAT_WAIT
    return max(0.0, interval - (time.monotonic() - quiet_since))

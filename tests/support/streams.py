"""A scripted ``next_events`` reader for EventStream tests (service streams, SSE heartbeats)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from llama_workflows_asgi.api.heartbeat import Heartbeat
from llama_workflows_asgi.service.streams import EventStream
from llama_workflows_asgi.store.base import StoredEvent


def ev(sequence: int, *, internal: bool = False, terminal: bool = False) -> StoredEvent:
    kind = "Stop" if terminal else "Internal" if internal else "Progress"
    return StoredEvent(sequence, f'{{"n":{sequence}}}', kind, internal, terminal)


@dataclass
class Reader:
    """A ``next_events`` that answers from a script and records how it was called.

    Each script entry is returned by one call; ``"wait"`` sleeps the timeout the
    stream asked for and returns ``[]``, as the service does when nothing was written.
    """

    script: list[list[StoredEvent] | str | None]
    calls: list[tuple[str, int, float]] = field(default_factory=list)

    async def __call__(self, run_id: str, after: int, timeout: float) -> list[StoredEvent] | None:
        self.calls.append((run_id, after, timeout))
        assert self.script, "the stream read past the end of the script"
        answer = self.script.pop(0)
        if answer == "wait":
            await asyncio.sleep(timeout)
            return []
        assert not isinstance(answer, str)
        return answer


def stream(
    first: list[StoredEvent], reader: Reader, *, cursor: int = -1, **options: object
) -> EventStream:
    return EventStream("run-1", cursor, first, reader, **options)  # type: ignore[arg-type]


async def collect(events: EventStream) -> list[list[StoredEvent]]:
    return [item async for item in events]


def sequences(items: Sequence[list[StoredEvent] | Heartbeat]) -> list[list[int] | str]:
    return [
        "heartbeat" if isinstance(item, Heartbeat) else [e.sequence for e in item] for item in items
    ]

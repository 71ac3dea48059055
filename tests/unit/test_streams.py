"""``service.streams``: EventStream over a scripted ``next_events`` reader."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from llama_workflows_asgi.service.streams import HEARTBEAT, EventStream, Heartbeat
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


async def collect(events: EventStream) -> list[list[StoredEvent] | Heartbeat]:
    return [item async for item in events]


def sequences(items: list[list[StoredEvent] | Heartbeat]) -> list[list[int] | str]:
    return [
        "heartbeat" if isinstance(item, Heartbeat) else [e.sequence for e in item] for item in items
    ]


async def test_one_batch_per_read_until_the_terminal_event() -> None:
    reader = Reader([[ev(2)], [ev(3), ev(4)], [ev(5, terminal=True)]])
    events = stream([ev(0), ev(1)], reader)
    assert sequences(await collect(events)) == [[0, 1], [2], [3, 4], [5]]
    assert [(run, after) for run, after, _ in reader.calls] == [
        ("run-1", 1),
        ("run-1", 2),
        ("run-1", 4),
    ]
    assert events.cursor == 5


async def test_reads_start_after_the_given_cursor_when_nothing_is_buffered() -> None:
    reader = Reader([[], [ev(8, terminal=True)]])
    events = stream([], reader, cursor=7, heartbeat_interval=None)
    assert sequences(await collect(events)) == [[8]]
    assert [after for _, after, _ in reader.calls] == [7, 7]


async def test_internal_events_are_hidden_but_move_the_cursor() -> None:
    reader = Reader([[ev(2, internal=True)], [ev(3), ev(4, terminal=True)]])
    events = stream([ev(0, internal=True), ev(1)], reader)
    assert sequences(await collect(events)) == [[1], [3, 4]]
    # The all-internal batch yields nothing, but the next read starts after it.
    assert [after for _, after, _ in reader.calls] == [1, 2]


async def test_internal_events_are_sent_when_asked() -> None:
    reader = Reader([[ev(2, internal=True), ev(3, terminal=True)]])
    events = stream([ev(0, internal=True), ev(1)], reader, include_internal=True)
    assert sequences(await collect(events)) == [[0, 1], [2, 3]]


async def test_a_terminal_event_is_sent_even_if_flagged_internal() -> None:
    events = stream([ev(0, internal=True), ev(1, internal=True, terminal=True)], Reader([]))
    assert sequences(await collect(events)) == [[1]]


async def test_the_terminal_event_ends_the_stream_and_nothing_after_it_is_sent() -> None:
    reader = Reader([[ev(1), ev(2, terminal=True), ev(3), ev(4)]])
    events = stream([ev(0)], reader)
    assert sequences(await collect(events)) == [[0], [1, 2]]
    assert events.cursor == 2
    assert len(reader.calls) == 1  # no read after the terminal event


async def test_a_terminal_first_batch_needs_no_read() -> None:
    reader = Reader([])
    assert sequences(await collect(stream([ev(0, terminal=True)], reader))) == [[0]]
    assert reader.calls == []


async def test_none_ends_the_stream_without_a_terminal_event() -> None:
    reader = Reader([[ev(1)], None])
    events = stream([ev(0)], reader)
    assert sequences(await collect(events)) == [[0], [1]]
    assert events.cursor == 1


async def test_heartbeat_after_the_interval_without_events() -> None:
    reader = Reader(["wait", "wait", [ev(0, terminal=True)]])
    started = time.monotonic()
    items = await collect(stream([], reader, heartbeat_interval=0.1))
    elapsed = time.monotonic() - started
    assert sequences(items) == ["heartbeat", "heartbeat", [0]]
    assert all(item is HEARTBEAT for item in items[:2])
    assert 0.2 <= elapsed < 1.0
    # Each read waits at most what is left of the interval.
    assert all(0 < timeout <= 0.1 for _, _, timeout in reader.calls)


async def test_events_postpone_the_heartbeat() -> None:
    reader = Reader([[ev(0)], [ev(1)], [ev(2, terminal=True)]])
    items = await collect(stream([], reader, heartbeat_interval=0.2))
    assert sequences(items) == [[0], [1], [2]]


async def test_hidden_events_do_not_postpone_the_heartbeat() -> None:
    async def slow_internal(run_id: str, after: int, timeout: float) -> list[StoredEvent]:
        await asyncio.sleep(timeout)
        return [ev(after + 1, internal=True)] if after < 3 else [ev(after + 1, terminal=True)]

    items = [
        item async for item in EventStream("run-1", -1, [], slow_internal, heartbeat_interval=0.05)
    ]
    assert "heartbeat" in sequences(items)
    assert sequences(items)[-1] == [4]


async def test_no_heartbeats_without_an_interval() -> None:
    reader = Reader([[], [], [ev(0, terminal=True)]])
    items = await collect(stream([], reader, heartbeat_interval=None))
    assert sequences(items) == [[0]]
    assert {timeout for _, _, timeout in reader.calls} == {60.0}


async def test_a_quiet_run_keeps_the_stream_open_with_heartbeats() -> None:
    reader = Reader(["wait"] * 100)
    items: list[list[StoredEvent] | Heartbeat] = []

    async def read() -> None:
        async for item in stream([], reader, heartbeat_interval=0.05):
            items.append(item)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(read(), 0.3)
    assert len(items) >= 3
    assert all(item is HEARTBEAT for item in items)

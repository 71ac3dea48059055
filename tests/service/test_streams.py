"""``service.streams``: EventStream over a scripted ``next_events`` reader.

Heartbeats are the HTTP edge's: see ``tests/api/test_heartbeat.py``.
"""

from __future__ import annotations

from llama_workflows_asgi.service.streams import EventStream
from tests.support.streams import Reader, collect, ev, sequences, stream


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
    events = stream([], reader, cursor=7)
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


async def test_next_batch_says_when_nothing_came_and_when_the_stream_ended() -> None:
    closed: list[bool] = []
    reader = Reader([[], [ev(1, internal=True)], [ev(2, terminal=True)]])
    events = EventStream("run-1", -1, [ev(0)], reader, on_close=lambda: closed.append(True))
    assert [e.sequence for e in await events.next_batch(1.0) or []] == [0]
    assert await events.next_batch(1.0) == []
    assert await events.next_batch(1.0) == []  # only a hidden event
    assert [e.sequence for e in await events.next_batch(1.0) or []] == [2]
    assert await events.next_batch(1.0) is None
    assert closed == [True]  # once, at the terminal event
    assert [timeout for _, _, timeout in reader.calls] == [1.0, 1.0, 1.0]

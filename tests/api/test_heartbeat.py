"""``api.heartbeat``: SSE heartbeats over an EventStream fed by a scripted reader."""

from __future__ import annotations

import asyncio
import time

import pytest

from llama_workflows_asgi.api.heartbeat import HEARTBEAT, Heartbeat, with_heartbeats
from llama_workflows_asgi.service.streams import EventStream
from llama_workflows_asgi.store.base import StoredEvent
from tests.support.streams import Reader, ev, sequences, stream


async def beats(events: EventStream, interval: float | None) -> list[list[StoredEvent] | Heartbeat]:
    return [item async for item in with_heartbeats(events, interval)]


async def test_heartbeat_after_the_interval_without_events() -> None:
    reader = Reader(["wait", "wait", [ev(0, terminal=True)]])
    started = time.monotonic()
    items = await beats(stream([], reader), 0.1)
    elapsed = time.monotonic() - started
    assert sequences(items) == ["heartbeat", "heartbeat", [0]]
    assert all(item is HEARTBEAT for item in items[:2])
    assert 0.2 <= elapsed < 1.0
    # Each read waits at most what is left of the interval.
    assert all(0 < timeout <= 0.1 for _, _, timeout in reader.calls)


async def test_events_postpone_the_heartbeat() -> None:
    reader = Reader([[ev(0)], [ev(1)], [ev(2, terminal=True)]])
    items = await beats(stream([], reader), 0.2)
    assert sequences(items) == [[0], [1], [2]]


async def test_hidden_events_do_not_postpone_the_heartbeat() -> None:
    async def slow_internal(run_id: str, after: int, timeout: float) -> list[StoredEvent]:
        await asyncio.sleep(timeout)
        return [ev(after + 1, internal=True)] if after < 3 else [ev(after + 1, terminal=True)]

    items = await beats(EventStream("run-1", -1, [], slow_internal), 0.05)
    assert "heartbeat" in sequences(items)
    assert sequences(items)[-1] == [4]


async def test_no_heartbeats_without_an_interval() -> None:
    reader = Reader([[], [], [ev(0, terminal=True)]])
    items = await beats(stream([], reader), None)
    assert sequences(items) == [[0]]
    assert {timeout for _, _, timeout in reader.calls} == {60.0}


async def test_a_quiet_run_keeps_the_stream_open_with_heartbeats() -> None:
    reader = Reader(["wait"] * 100)
    items: list[list[StoredEvent] | Heartbeat] = []

    async def read() -> None:
        async for item in with_heartbeats(stream([], reader), 0.05):
            items.append(item)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(read(), 0.3)
    assert len(items) >= 3
    assert all(item is HEARTBEAT for item in items)

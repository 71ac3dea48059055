"""Answering a run from a replica that does not execute it, timed (tests and benchmarks)."""

from __future__ import annotations

import time

import httpx

from tests.support.http import HEARTBEAT, FrameReader, parse_sse_frame, start

ANSWER = {"event": {"type": "AnswerEvent", "value": {"answer": "from the other replica"}}}


async def answer_elsewhere(owner_url: str, other_url: str) -> float:
    """Seconds from an answer POSTed to ``other_url`` until the run's final event
    reaches a stream read from ``other_url``, for a ``hitl`` run live on ``owner_url``.

    Checks that the stream carried every event of the run once, in order, and
    ended at the final one.
    """
    timeout = httpx.Timeout(60.0)
    async with (
        httpx.AsyncClient(base_url=owner_url, timeout=timeout) as owner,
        httpx.AsyncClient(base_url=other_url, timeout=timeout) as other,
    ):
        handler_id = await start(owner, "hitl")
        async with httpx.AsyncClient(base_url=other_url, timeout=timeout) as streaming:
            params = {"after_sequence": "-1"}
            async with streaming.stream("GET", f"/events/{handler_id}", params=params) as response:
                assert response.status_code == 200
                reader = FrameReader(response)
                frames = await reader.until_event("AskEvent", timeout=30)
                sent = time.perf_counter()
                answered = await other.post(f"/events/{handler_id}", json=ANSWER)
                assert answered.status_code == 200, answered.text
                frames += await reader.until_event("StopEvent", timeout=30)
                elapsed = time.perf_counter() - sent
                frames += await reader.rest(timeout=30)
        replay = await owner.get(f"/events/{handler_id}", params={"after_sequence": "-1"})
    seen = [parse_sse_frame(frame) for frame in frames if frame != HEARTBEAT]
    logged = [parse_sse_frame(f) for f in replay.content[:-2].split(b"\n\n") if f != HEARTBEAT]
    assert [sequence for sequence, _ in seen] == [sequence for sequence, _ in logged]
    assert seen == logged, "the stream differs from the run's event log"
    assert seen[-1][1]["type"] == "StopEvent"
    return elapsed


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]

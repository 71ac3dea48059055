"""Raw-HTTP helpers for the protocol suites: handler polling and stream framing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

HANDLER_KEYS = [
    "handler_id",
    "workflow_name",
    "run_id",
    "error",
    "result",
    "result_unreadable",
    "status",
    "started_at",
    "updated_at",
    "completed_at",
]
"""The keys of ``HandlerData`` in wire order; every one is always present."""

ENVELOPE_KEYS = ["value", "qualified_name", "type", "types"]
"""The keys of an emitted event envelope in wire order."""

HEARTBEAT = b": heartbeat"
"""An SSE heartbeat frame (without its terminating blank line)."""


def compact(value: Any) -> bytes:
    """``value`` as the server writes JSON: compact, non-ASCII raw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def wait_until_finished(
    http: httpx.AsyncClient, handler_id: str, timeout: float = 15.0
) -> httpx.Response:
    """Poll ``GET /handlers/{id}`` until it stops answering 202; return that answer."""

    async def poll() -> httpx.Response:
        while True:
            response = await http.get(f"/handlers/{handler_id}")
            if response.status_code != 202:
                return response
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), timeout)


async def start(http: httpx.AsyncClient, workflow: str, body: Any = None, **kwargs: Any) -> str:
    """``POST /workflows/{workflow}/run-nowait``; return the new handler id."""
    response = await http.post(f"/workflows/{workflow}/run-nowait", json=body or {}, **kwargs)
    assert response.status_code == 200, response.text
    handler_id: str = response.json()["handler_id"]
    return handler_id


async def run(http: httpx.AsyncClient, workflow: str, body: Any = None) -> dict[str, Any]:
    """``POST /workflows/{workflow}/run`` expecting success; return the HandlerData."""
    response = await http.post(f"/workflows/{workflow}/run", json=body or {})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def sse_frames(body: bytes) -> list[bytes]:
    """The frames of an SSE body, without their terminating blank lines."""
    assert body.endswith(b"\n\n"), body[-200:]
    return body[:-2].split(b"\n\n")


def sse_events(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """``(id, envelope)`` of every event frame of an SSE body (heartbeats skipped)."""
    return [parse_sse_frame(frame) for frame in sse_frames(body) if frame != HEARTBEAT]


def parse_sse_frame(frame: bytes) -> tuple[int, dict[str, Any]]:
    """Parse one ``id: N\\ndata: {...}`` frame, checking it has exactly those two lines."""
    id_line, data_line = frame.split(b"\n")
    assert id_line.startswith(b"id: "), frame
    assert data_line.startswith(b"data: "), frame
    return int(id_line[4:]), json.loads(data_line[6:])


def ndjson_events(body: bytes) -> list[dict[str, Any]]:
    """The envelopes of an NDJSON body (one JSON object per ``\\n``-terminated line)."""
    assert body.endswith(b"\n"), body[-200:]
    return [json.loads(line) for line in body[:-1].split(b"\n")]


class FrameReader:
    """Reads an open SSE response frame by frame, keeping every byte it saw."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._buffer = b""
        self.received = b""
        self.closed = False

    async def next_frame(self, timeout: float = 10.0) -> bytes | None:
        """The next frame, or ``None`` once the server closed the stream."""
        return await asyncio.wait_for(self._next_frame(), timeout)

    async def _next_frame(self) -> bytes | None:
        while b"\n\n" not in self._buffer:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                self.closed = True
                assert self._buffer == b"", f"stream ended mid-frame: {self._buffer!r}"
                return None
            self._buffer += chunk
            self.received += chunk
        frame, _, self._buffer = self._buffer.partition(b"\n\n")
        return frame

    async def until_event(self, event_type: str, timeout: float = 10.0) -> list[bytes]:
        """Frames read up to and including the first event of ``event_type``."""
        frames: list[bytes] = []

        async def read() -> list[bytes]:
            while True:
                frame = await self._next_frame()
                assert frame is not None, f"stream closed before a {event_type}: {frames}"
                frames.append(frame)
                if frame != HEARTBEAT and parse_sse_frame(frame)[1]["type"] == event_type:
                    return frames

        return await asyncio.wait_for(read(), timeout)

    async def rest(self, timeout: float = 10.0) -> list[bytes]:
        """Every remaining frame until the server closes the stream."""
        frames: list[bytes] = []

        async def read() -> list[bytes]:
            while (frame := await self._next_frame()) is not None:
                frames.append(frame)
            return frames

        return await asyncio.wait_for(read(), timeout)


async def wait_until_event(http: httpx.AsyncClient, handler_id: str, event_type: str) -> None:
    """Wait until the run has written an event of ``event_type`` (internal ones included)."""
    params = {"after_sequence": "-1", "include_internal": "true"}
    async with http.stream("GET", f"/events/{handler_id}", params=params) as response:
        assert response.status_code == 200
        await FrameReader(response).until_event(event_type)


async def wait_until_idle(http: httpx.AsyncClient, handler_id: str) -> None:
    """Wait until a run's ``WorkflowIdleEvent`` is written (it waits for input)."""
    await wait_until_event(http, handler_id, "WorkflowIdleEvent")

"""``api.events``: a run's events as SSE or NDJSON, and events sent into a run.

Streams are read through the in-process transport, which buffers the whole
body: each one read here ends with its run's final event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llama_workflows_asgi.api import events
from tests.support.http import ENVELOPE_KEYS, ndjson_events, sse_events
from tests.support.routes import Edge, routes_of, sqlite_store
from tests.support.workflows import GreetWorkflow, HitlWorkflow, SlowWorkflow

ALL = {"after_sequence": "-1"}
ANSWER = {"event": {"type": "AnswerEvent", "value": {"answer": "Ada"}}}

memory_only = pytest.mark.parametrize("edge", ["memory"], indirect=True)
"""For checks of parameter parsing that no store takes part in."""


@pytest.fixture(params=["memory", "sqlite"])
async def edge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Edge]:
    served = {
        "greet": GreetWorkflow(),
        "hitl": HitlWorkflow(timeout=None),
        "slow": SlowWorkflow(timeout=None),
    }
    store = await sqlite_store(tmp_path) if request.param == "sqlite" else None
    async with routes_of(events, workflows=served, store=store) as edge:
        yield edge


async def greeted(edge: Edge) -> str:
    start = edge.service.registry.get("greet").workflow.start_event_class(name="Ada")
    return (await edge.service.run("greet", start)).handler_id


async def test_sse_frames_carry_sequences_and_end_with_the_stop_event(edge: Edge) -> None:
    handler_id = await greeted(edge)
    response = await edge.http.get(f"/events/{handler_id}", params=ALL)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    frames = sse_events(response.content)
    assert [envelope["type"] for _, envelope in frames] == ["ProgressEvent"] * 3 + ["StopEvent"]
    sequences = [sequence for sequence, _ in frames]
    assert sequences == sorted(sequences)
    assert all(list(envelope) == ENVELOPE_KEYS for _, envelope in frames)
    assert frames[0][1]["value"] == {"msg": "step 0", "i": 0}
    assert frames[-1][1]["qualified_name"] == "workflows.events.StopEvent"

    # Resuming after the second event, by cursor or by Last-Event-ID (which wins).
    second = str(sequences[1])
    resumed = await edge.http.get(f"/events/{handler_id}", params={"after_sequence": second})
    assert [s for s, _ in sse_events(resumed.content)] == sequences[2:]
    by_header = await edge.http.get(
        f"/events/{handler_id}", params=ALL, headers={"Last-Event-ID": second}
    )
    assert [s for s, _ in sse_events(by_header.content)] == sequences[2:]


async def test_ndjson_lines_and_options(edge: Edge) -> None:
    handler_id = await greeted(edge)
    plain = {**ALL, "sse": "false", "include_qualified_name": "false"}
    response = await edge.http.get(f"/events/{handler_id}", params=plain)
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = ndjson_events(response.content)
    assert [line["type"] for line in lines][-1] == "StopEvent"
    assert {line["qualified_name"] for line in lines} == {None}
    internal = {**ALL, "sse": "false", "include_internal": "true"}
    everything = ndjson_events(
        (await edge.http.get(f"/events/{handler_id}", params=internal)).content
    )
    assert len(everything) > len(lines)
    assert "StepStateChanged" in {line["type"] for line in everything}


async def test_nothing_left_of_a_finished_run_is_204(edge: Edge) -> None:
    handler_id = await greeted(edge)
    response = await edge.http.get(f"/events/{handler_id}")  # after_sequence defaults to now
    assert (response.status_code, response.content) == (204, b"")


async def test_a_sent_event_reaches_the_waiting_run(edge: Edge) -> None:
    started = await edge.service.start_run("hitl")
    sent = await edge.http.post(f"/events/{started.handler_id}", json=ANSWER)
    assert (sent.status_code, sent.content) == (200, b'{"status":"sent"}')
    done = await edge.service.wait_for(started.handler_id)
    assert done.result_envelope() is not None
    assert (done.status, done.result_envelope()["value"]) == ("completed", {"result": "got Ada"})
    # The run is over: sending again conflicts.
    late = await edge.http.post(f"/events/{started.handler_id}", json=ANSWER)
    assert (late.status_code, late.json()) == (409, {"detail": "Workflow already completed"})


@memory_only
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{", "Invalid JSON body: "),
        (b"[1]", "Request body must be a JSON object"),
        (b"{}", "Event data is required"),
        (b'{"event": {"type": "AnswerEvent"}, "step": 3}', "Invalid step: it must be a string"),
        (b'{"event": {"type": "Nope", "value": {}}}', "Invalid event type: Nope"),
        (b'{"event": {"qualified_name": "os.system", "value": {}}}', "not declared"),
    ],
    ids=["invalid", "array", "no-event", "step", "type", "qualified-name"],
)
async def test_bad_events_are_400_and_leave_the_run_waiting(
    edge: Edge, body: bytes, detail: str
) -> None:
    started = await edge.service.start_run("hitl")
    response = await edge.http.post(f"/events/{started.handler_id}", content=body)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert (await edge.service.get(started.handler_id)).status == "running"


@memory_only
@pytest.mark.parametrize(
    ("params", "headers", "detail"),
    [
        ({"after_sequence": "abc"}, {}, "Invalid after_sequence: 'abc'"),
        ({"sse": "maybe"}, {}, "Invalid sse: 'maybe'"),
        ({"include_internal": "2"}, {}, "Invalid include_internal: '2'"),
        ({}, {"Last-Event-ID": str(2**64)}, "Invalid Last-Event-ID"),
    ],
    ids=["after-sequence", "sse", "include-internal", "last-event-id"],
)
async def test_bad_stream_parameters_are_400(
    edge: Edge, params: dict[str, str], headers: dict[str, str], detail: str
) -> None:
    started = await edge.service.start_run("slow")
    response = await edge.http.get(f"/events/{started.handler_id}", params=params, headers=headers)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


@memory_only
async def test_unknown_handler_is_404_on_both_routes(edge: Edge) -> None:
    expected = {"detail": "Handler 'nope' not found"}
    assert (await edge.http.get("/events/nope")).json() == expected
    posted = await edge.http.post("/events/nope", json=ANSWER)
    assert (posted.status_code, posted.json()) == (404, expected)


@memory_only
async def test_only_the_two_event_routes_are_added(edge: Edge) -> None:
    paths = edge.app.openapi()["paths"]
    assert {path: sorted(methods) for path, methods in paths.items()} == {
        "/events/{handler_id}": ["get", "post"]
    }
    stream = paths["/events/{handler_id}"]["get"]["responses"]
    assert {"text/event-stream", "application/x-ndjson"} == set(stream["200"]["content"])
    assert "204" in stream

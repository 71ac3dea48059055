"""The wire protocol byte by byte, with raw HTTP against a real server (wire-protocol.md §2-§4).

Where this package deliberately differs from the reference server, the tests assert
the package's choice: wrong methods get 405, booleans accept true/false/1/0 in any
case, ``GET /handlers`` pages with ``next_cursor``, nothing is served at ``/``.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import httpx
import pytest
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent
from workflows.resource import Resource

from llama_workflows_asgi import WorkflowServer
from tests.support.http import (
    ENVELOPE_KEYS,
    HANDLER_KEYS,
    HEARTBEAT,
    FrameReader,
    compact,
    ndjson_events,
    parse_sse_frame,
    run,
    sse_events,
    sse_frames,
    start,
    wait_until_finished,
    wait_until_idle,
)
from tests.support.rows import CountRows
from tests.support.servers import serving

GREET_QN = "tests.support.workflows.ProgressEvent"
STOP_QN = "workflows.events.StopEvent"
ID_PATTERN = re.compile(r"[A-Za-z0-9]{10}")

memory_only = pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
"""For checks of the HTTP edge and the codec, which no store takes part in."""


def progress_frame(sequence: int, i: int) -> bytes:
    envelope = (
        f'{{"value":{{"msg":"step {i}","i":{i}}},"qualified_name":"{GREET_QN}",'
        '"type":"ProgressEvent","types":null}'
    )
    return f"id: {sequence}\ndata: {envelope}\n\n".encode()


def greeting_stop_frame(sequence: int, name: str) -> bytes:
    envelope = (
        f'{{"value":{{"result":{{"greeting":"Hello, {name}!"}}}},"qualified_name":"{STOP_QN}",'
        '"type":"StopEvent","types":null}'
    )
    return f"id: {sequence}\ndata: {envelope}\n\n".encode()


# A finished greet run logs: 0 StepStateChanged, 1-3 ProgressEvent, 4 StepStateChanged, 5 StopEvent.
ADA_STREAM = (
    progress_frame(1, 0)
    + progress_frame(2, 1)
    + progress_frame(3, 2)
    + greeting_stop_frame(5, "Ada")
)


@pytest.fixture
async def ada(http: httpx.AsyncClient) -> str:
    """The handler id of a finished greet run for "Ada"."""
    handler: dict[str, Any] = await run(http, "greet", {"start_event": {"name": "Ada"}})
    return str(handler["handler_id"])


async def stream(http: httpx.AsyncClient, handler_id: str, **params: str) -> httpx.Response:
    return await http.get(f"/events/{handler_id}", params=params)


async def wait_until_listed(http: httpx.AsyncClient, handler_id: str) -> None:
    for _ in range(500):
        if (await http.get(f"/handlers/{handler_id}")).status_code != 404:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"handler {handler_id} never appeared")


def aware(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp)
    assert moment.utcoffset() == timedelta(0), timestamp
    return moment


# -- HandlerData ---------------------------------------------------------------------------------


async def test_running_handler_has_every_key_with_nulls(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/workflows/slow/run-nowait", json={"start_event": {"seconds": 30}, "context": {}}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == HANDLER_KEYS
    assert ID_PATTERN.fullmatch(body["handler_id"])
    assert ID_PATTERN.fullmatch(body["run_id"])
    assert body["workflow_name"] == "slow"
    assert (body["status"], body["error"], body["result"]) == ("running", None, None)
    assert body["result_unreadable"] is False
    assert body["completed_at"] is None
    assert body["started_at"] == body["updated_at"]
    aware(body["started_at"])
    assert b'"error":null,"result":null,"result_unreadable":false' in response.content

    polled = await http.get(f"/handlers/{body['handler_id']}")
    assert polled.status_code == 202
    assert list(polled.json()) == HANDLER_KEYS
    assert polled.json()["status"] == "running"
    await http.post(f"/handlers/{body['handler_id']}/cancel")


async def test_completed_handler_carries_its_result_envelope(
    http: httpx.AsyncClient, ada: str
) -> None:
    response = await http.get(f"/handlers/{ada}")
    assert response.status_code == 200
    assert response.content == compact(response.json())  # compact JSON, keys in wire order
    body = response.json()
    assert list(body) == HANDLER_KEYS
    assert body["status"] == "completed"
    assert body["error"] is None
    assert list(body["result"]) == ENVELOPE_KEYS
    assert body["result"] == {
        "value": {"result": {"greeting": "Hello, Ada!"}},
        "qualified_name": STOP_QN,
        "type": "StopEvent",
        "types": None,
    }
    assert body["completed_at"] == body["updated_at"]
    assert aware(body["completed_at"]) >= aware(body["started_at"])


async def test_failed_run_answers_500_with_handler_data(http: httpx.AsyncClient) -> None:
    response = await http.post("/workflows/fail/run", json={})
    assert response.status_code == 500
    body = response.json()
    assert list(body) == HANDLER_KEYS
    assert (body["status"], body["error"], body["result"]) == ("failed", "kaboom", None)
    assert body["completed_at"] is not None

    for path in (f"/handlers/{body['handler_id']}", f"/results/{body['handler_id']}"):
        again = await http.get(path)
        assert again.status_code == 500
        assert again.json() == body

    logged = await stream(http, body["handler_id"], after_sequence="-1")
    last = sse_events(logged.content)[-1][1]
    assert (last["type"], last["types"]) == ("WorkflowFailedEvent", ["StopEvent"])
    assert last["value"]["exception"]["exception_message"] == "kaboom"


async def test_status_codes_follow_the_handler_status(http: httpx.AsyncClient) -> None:
    slow = await start(http, "slow", {"start_event": {"seconds": 30}})
    assert (await http.get(f"/handlers/{slow}")).status_code == 202
    assert (await http.get(f"/results/{slow}")).status_code == 202

    cancelled = await http.post(f"/handlers/{slow}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.content == b'{"status":"cancelled"}'
    for path in (f"/handlers/{slow}", f"/results/{slow}"):
        response = await http.get(path)
        assert response.status_code == 500
        assert response.json()["status"] == "cancelled"
        assert response.json()["error"] is None

    greet = await start(http, "greet")
    assert (await wait_until_finished(http, greet)).status_code == 200
    assert (await http.get(f"/results/{greet}")).status_code == 200


async def test_waiting_run_cancelled_meanwhile_answers_500(http: httpx.AsyncClient) -> None:
    waiting = asyncio.create_task(
        http.post("/workflows/slow/run", json={"start_event": {"seconds": 30}, "handler_id": "w1"})
    )
    await wait_until_listed(http, "w1")
    assert (await http.post("/handlers/w1/cancel")).status_code == 200
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 500
    assert list(response.json()) == HANDLER_KEYS
    assert response.json()["status"] == "cancelled"


@memory_only
async def test_fixed_documents_are_compact(http: httpx.AsyncClient) -> None:
    health = await http.get("/health")
    assert (health.status_code, health.content) == (200, b'{"status":"healthy"}')
    workflows = await http.get("/workflows")
    assert workflows.content == b'{"workflows":["greet","custom","hitl","fail","slow","counter"]}'
    assert workflows.headers["content-type"] == "application/json"


# -- start events (§3.3) ---------------------------------------------------------------------

HELLO_ADA = {"result": {"greeting": "Hello, Ada!"}}
HELLO_WORLD = {"result": {"greeting": "Hello, World!"}}


@pytest.mark.parametrize(
    ("workflow", "body", "result_value"),
    [
        pytest.param("greet", {"start_event": {"name": "Ada"}}, HELLO_ADA, id="bare-object"),
        pytest.param("greet", {"start_event": {"_data": {"name": "Ada"}}}, HELLO_ADA, id="_data"),
        pytest.param(
            "greet",
            {"start_event": {"type": "StartEvent", "value": {"name": "Ada"}}},
            HELLO_ADA,
            id="envelope-with-type",
        ),
        pytest.param(
            "greet",
            {
                "start_event": {
                    "value": {"_data": {"name": "Ada"}},
                    "type": "StartEvent",
                    "qualified_name": None,
                },
                "context": {},
            },
            HELLO_ADA,
            id="client-envelope",
        ),
        pytest.param(
            "greet",
            {
                "start_event": {
                    "qualified_name": "workflows.events.StartEvent",
                    "value": {"name": "Ada"},
                }
            },
            HELLO_ADA,
            id="envelope-with-qualified-name",
        ),
        pytest.param(
            "custom",
            {
                "start_event": {
                    "qualified_name": "tests.support.workflows.MyStart",
                    "value": {"topic": "cats", "count": 2},
                }
            },
            {"answer": 84, "topic": "cats"},
            id="custom-class-by-qualified-name",
        ),
        pytest.param("greet", {"start_event": '{"name": "Ada"}'}, HELLO_ADA, id="json-string"),
        pytest.param(
            "greet",
            {"start_event": '{"type": "StartEvent", "value": {"name": "Ada"}}'},
            HELLO_ADA,
            id="json-string-envelope",
        ),
        pytest.param("greet", {"kwargs": {"name": "Ada"}}, HELLO_ADA, id="legacy-kwargs"),
        pytest.param(
            "greet",
            {"start_event": {"name": "Ada"}, "kwargs": {"name": "Bob"}},
            HELLO_ADA,
            id="kwargs-ignored-beside-start-event",
        ),
        pytest.param(
            "greet",
            {"start_event": {"type": "StartEvent", "data": {"name": "Ada"}}},
            HELLO_ADA,
            id="legacy-data-alias",
        ),
        pytest.param(
            "custom",
            {"start_event": {"type": "StartEvent", "value": {"_data": {"topic": "owls"}}}},
            {"answer": 42, "topic": "owls"},
            id="base-start-envelope-into-subclass",
        ),
        pytest.param(
            "custom",
            {"start_event": {"type": "StartEvent", "value": {"topic": "owls", "count": 3}}},
            {"answer": 126, "topic": "owls"},
            id="base-start-fields-into-subclass",
        ),
        pytest.param(
            "custom",
            {"start_event": {"type": "MyStart", "value": {"topic": "cats"}}},
            {"answer": 42, "topic": "cats"},
            id="custom-class-by-type",
        ),
        pytest.param("greet", {"start_event": None}, HELLO_WORLD, id="null"),
        pytest.param("greet", {"start_event": {}, "context": {}}, HELLO_WORLD, id="empty-object"),
        pytest.param("greet", {}, HELLO_WORLD, id="empty-body"),
    ],
)
@memory_only
async def test_run_nowait_accepts_every_start_event_form(
    http: httpx.AsyncClient, workflow: str, body: dict[str, Any], result_value: dict[str, Any]
) -> None:
    response = await http.post(f"/workflows/{workflow}/run-nowait", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "running"
    done = await wait_until_finished(http, response.json()["handler_id"])
    assert done.status_code == 200, done.text
    assert done.json()["result"]["value"] == result_value


async def test_custom_stop_event_round_trip_and_legacy_results(http: httpx.AsyncClient) -> None:
    handler = await run(http, "custom", {"start_event": {"topic": "cats", "count": 2}})
    assert handler["result"] == {
        "value": {"answer": 84, "topic": "cats"},
        "qualified_name": "tests.support.workflows.MyStop",
        "type": "MyStop",
        "types": ["StopEvent"],
    }
    legacy = await http.get(f"/results/{handler['handler_id']}")
    assert legacy.status_code == 200
    assert legacy.json() == {**handler, "result": {"answer": 84, "topic": "cats"}}


async def test_results_unwraps_a_plain_stop_events_result(http: httpx.AsyncClient) -> None:
    for workflow, body, unwrapped in [
        ("greet", {"start_event": {"name": "Ada"}}, {"greeting": "Hello, Ada!"}),
        ("counter", {}, {"count": 1}),
        ("fail", {}, None),
    ]:
        handler_id = await start(http, workflow, body)
        await wait_until_finished(http, handler_id)
        legacy = await http.get(f"/results/{handler_id}")
        assert list(legacy.json()) == HANDLER_KEYS
        assert legacy.json()["result"] == unwrapped, workflow


# -- streams (§4) ----------------------------------------------------------------------------


async def test_sse_frames_are_exact(http: httpx.AsyncClient, ada: str) -> None:
    response = await stream(http, ada, after_sequence="-1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == ADA_STREAM


async def test_ndjson_lines_have_no_ids(http: httpx.AsyncClient, ada: str) -> None:
    response = await stream(http, ada, sse="false", after_sequence="-1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    expected = [parse_sse_frame(frame)[1] for frame in sse_frames(ADA_STREAM)]
    assert response.content == b"".join(compact(envelope) + b"\n" for envelope in expected)
    assert b"id:" not in response.content


async def test_after_sequence_resumes_after_a_given_event(
    http: httpx.AsyncClient, ada: str
) -> None:
    expected_after = {
        "-1": ADA_STREAM,
        "0": ADA_STREAM,  # 0 is an internal event: nothing visible is skipped
        "2": progress_frame(3, 2) + greeting_stop_frame(5, "Ada"),
        "4": greeting_stop_frame(5, "Ada"),
    }
    for after, expected in expected_after.items():
        response = await stream(http, ada, after_sequence=after)
        assert (response.status_code, response.content) == (200, expected), after


async def test_nothing_left_of_a_finished_run_is_an_empty_204(
    http: httpx.AsyncClient, ada: str
) -> None:
    for params in (
        {},  # the default cursor is "now"
        {"after_sequence": "now"},
        {"after_sequence": "5"},  # the terminal event's sequence
        {"after_sequence": "99"},
        {"after_sequence": "now", "sse": "false"},
    ):
        response = await stream(http, ada, **params)
        assert (response.status_code, response.content) == (204, b""), params


async def test_last_event_id_overrides_after_sequence_in_sse_only(
    http: httpx.AsyncClient, ada: str
) -> None:
    resumed = await http.get(
        f"/events/{ada}", params={"after_sequence": "-1"}, headers={"Last-Event-ID": "2"}
    )
    assert resumed.content == progress_frame(3, 2) + greeting_stop_frame(5, "Ada")

    garbage = await http.get(
        f"/events/{ada}", params={"after_sequence": "-1"}, headers={"Last-Event-ID": "abc"}
    )
    assert garbage.content == ADA_STREAM

    ndjson = await http.get(
        f"/events/{ada}",
        params={"after_sequence": "-1", "sse": "false"},
        headers={"Last-Event-ID": "2"},
    )
    assert len(ndjson_events(ndjson.content)) == 4


async def test_include_internal_shows_engine_events(http: httpx.AsyncClient, ada: str) -> None:
    response = await stream(http, ada, after_sequence="-1", include_internal="true")
    events = sse_events(response.content)
    assert [sequence for sequence, _ in events] == [0, 1, 2, 3, 4, 5]
    assert [envelope["type"] for _, envelope in events] == [
        "StepStateChanged",
        "ProgressEvent",
        "ProgressEvent",
        "ProgressEvent",
        "StepStateChanged",
        "StopEvent",
    ]
    assert events[0][1]["types"] == ["InternalDispatchEvent"]
    assert events[0][1]["qualified_name"] == "workflows.events.StepStateChanged"
    assert events[0][1]["value"]["step_state"] == "running"


@memory_only
async def test_boolean_parameters_accept_true_false_1_0_in_any_case(
    http: httpx.AsyncClient, ada: str
) -> None:
    with_internal = (await stream(http, ada, after_sequence="-1", include_internal="1")).content
    for spelling in ("true", "True", "TRUE", "1"):
        response = await stream(http, ada, after_sequence="-1", include_internal=spelling)
        assert response.content == with_internal, spelling
    for spelling in ("false", "False", "FALSE", "0", ""):
        response = await stream(http, ada, after_sequence="-1", include_internal=spelling)
        assert response.content == ADA_STREAM, spelling
    for spelling in ("False", "0"):
        response = await stream(http, ada, after_sequence="-1", sse=spelling)
        assert response.headers["content-type"] == "application/x-ndjson", spelling


async def test_include_qualified_name_false_nulls_it_everywhere(
    http: httpx.AsyncClient, ada: str
) -> None:
    params = {"after_sequence": "-1", "include_qualified_name": "false"}
    sse = await stream(http, ada, **params)
    ndjson = await stream(http, ada, **params, sse="false")
    for envelopes in (
        [envelope for _, envelope in sse_events(sse.content)],
        ndjson_events(ndjson.content),
    ):
        assert len(envelopes) == 4
        assert all(list(envelope) == ENVELOPE_KEYS for envelope in envelopes)
        assert all(envelope["qualified_name"] is None for envelope in envelopes)
        assert envelopes[-1]["value"] == HELLO_ADA


async def test_heartbeats_while_a_run_waits_for_input(http: httpx.AsyncClient) -> None:
    handler_id = await start(http, "hitl")
    params = {"after_sequence": "-1"}
    async with http.stream("GET", f"/events/{handler_id}", params=params) as response:
        assert response.status_code == 200
        reader = FrameReader(response)
        asked = await reader.until_event("AskEvent")
        assert parse_sse_frame(asked[-1])[1]["value"] == {"question": "what is your name?"}
        assert await reader.next_frame(timeout=3) == HEARTBEAT
        assert await reader.next_frame(timeout=3) == HEARTBEAT

        answer = {"event": {"type": "AnswerEvent", "value": {"answer": "Ada"}}}
        assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
        rest = [frame for frame in await reader.rest() if frame != HEARTBEAT]
    assert b": heartbeat\n\n" in reader.received
    assert [parse_sse_frame(frame)[1]["value"] for frame in rest] == [{"result": "got Ada"}]


async def test_stream_closes_right_after_the_terminal_event(http: httpx.AsyncClient) -> None:
    handler_id = await start(http, "slow", {"start_event": {"seconds": 30}})
    async with http.stream("GET", f"/events/{handler_id}") as response:
        reader = FrameReader(response)
        assert await reader.next_frame(timeout=3) == HEARTBEAT
        assert (await http.post(f"/handlers/{handler_id}/cancel")).status_code == 200
        frames = [frame for frame in await reader.rest(timeout=5) if frame != HEARTBEAT]
    # Closed at once: a stream left open would have sent heartbeats after the last event.
    assert reader.received.endswith(frames[-1] + b"\n\n")
    assert len(frames) == 1
    envelope = parse_sse_frame(frames[0])[1]
    assert (envelope["type"], envelope["types"], envelope["value"]) == (
        "WorkflowCancelledEvent",
        ["StopEvent"],
        {},
    )


async def test_two_concurrent_streams_of_one_run_see_the_same_bytes(
    http: httpx.AsyncClient,
) -> None:
    handler_id = await start(http, "hitl")
    params = {"after_sequence": "-1", "sse": "true"}
    async with (
        http.stream("GET", f"/events/{handler_id}", params=params) as first,
        http.stream("GET", f"/events/{handler_id}", params=params) as second,
    ):
        readers = [FrameReader(first), FrameReader(second)]
        for reader in readers:
            await reader.until_event("AskEvent")
        answer = {"event": {"type": "AnswerEvent", "value": {"answer": "Both"}}}
        assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
        for reader in readers:
            await reader.rest()
    seen = [[envelope for _, envelope in sse_events(reader.received)] for reader in readers]
    assert seen[0] == seen[1]
    assert [envelope["type"] for envelope in seen[0]] == ["AskEvent", "StopEvent"]
    assert seen[0][-1]["value"] == {"result": "got Both"}


async def test_after_sequence_now_on_a_live_run_skips_what_was_written(
    http: httpx.AsyncClient,
) -> None:
    handler_id = await start(http, "hitl")
    async with http.stream("GET", f"/events/{handler_id}", params={"after_sequence": "-1"}) as r:
        await FrameReader(r).until_event("AskEvent")
    async with http.stream("GET", f"/events/{handler_id}", params={"after_sequence": "now"}) as r:
        reader = FrameReader(r)
        answer = {"event": {"type": "AnswerEvent", "value": {"answer": "Now"}}}
        assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
        frames = [frame for frame in await reader.rest() if frame != HEARTBEAT]
    assert [parse_sse_frame(frame)[1]["type"] for frame in frames] == ["StopEvent"]


async def test_stream_with_a_cursor_past_the_end_closes_when_the_run_finishes(
    http: httpx.AsyncClient,
) -> None:
    # On a finished run this cursor gets an empty 204; on a live one the stream must
    # end once the run is over, even though its terminal event lies before the cursor.
    handler_id = await start(http, "hitl")
    await wait_until_idle(http, handler_id)
    params = {"after_sequence": "99"}
    async with http.stream("GET", f"/events/{handler_id}", params=params) as response:
        assert response.status_code == 200
        reader = FrameReader(response)
        answer = {"event": {"type": "AnswerEvent", "value": {"answer": "x"}}}
        assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
        assert (await wait_until_finished(http, handler_id)).status_code == 200
        try:
            frames = await reader.rest(timeout=5)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"the stream stayed open after the run finished: {reader.received[-60:]!r}"
            ) from None
    assert set(frames) <= {HEARTBEAT}


async def test_restarted_handler_id_streams_only_its_new_run(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    first = await run(http, "counter", {"handler_id": "again"})
    rows_after_first = await stored_rows()
    second = await run(http, "counter", {"handler_id": "again"})
    assert second["run_id"] != first["run_id"]
    assert second["result"]["value"] == {"result": {"count": 2}}
    # The first run's log went with it: the store holds as many rows as after one run.
    assert await stored_rows() == rows_after_first

    response = await stream(http, "again", after_sequence="-1", include_internal="true")
    events = sse_events(response.content)
    assert events[0][0] == 0
    assert [envelope["type"] for _, envelope in events].count("StopEvent") == 1
    assert events[-1][1]["value"] == {"result": {"count": 2}}


async def test_run_waits_for_an_answer_sent_meanwhile(http: httpx.AsyncClient) -> None:
    waiting = asyncio.create_task(http.post("/workflows/hitl/run", json={"handler_id": "asks"}))
    await wait_until_listed(http, "asks")
    await wait_until_idle(http, "asks")
    assert not waiting.done()
    answer = {"event": {"type": "AnswerEvent", "value": {"answer": "Meanwhile"}}}
    assert (await http.post("/events/asks", json=answer)).status_code == 200
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 200
    assert response.json()["result"]["value"] == {"result": "got Meanwhile"}


# -- sending events (§3.11) --------------------------------------------------------------------


async def test_send_event_as_a_json_string_envelope(http: httpx.AsyncClient) -> None:
    handler_id = await start(http, "hitl")
    envelope = json.dumps({"type": "AnswerEvent", "value": {"answer": "Str"}})
    sent = await http.post(f"/events/{handler_id}", json={"event": envelope})
    assert (sent.status_code, sent.content) == (200, b'{"status":"sent"}')
    done = await wait_until_finished(http, handler_id)
    assert done.json()["result"]["value"] == {"result": "got Str"}


async def test_event_no_step_accepts_is_sent_and_logged_as_unhandled(
    http: httpx.AsyncClient,
) -> None:
    handler_id = await start(http, "hitl")
    params = {"after_sequence": "-1", "include_internal": "true"}
    async with http.stream("GET", f"/events/{handler_id}", params=params) as response:
        reader = FrameReader(response)
        await reader.until_event("WorkflowIdleEvent")
        stray = {"event": {"type": "HumanResponseEvent", "value": {"_data": {"x": 1}}}}
        sent = await http.post(f"/events/{handler_id}", json=stray)
        assert (sent.status_code, sent.json()) == (200, {"status": "sent"})
        unhandled = parse_sse_frame((await reader.until_event("UnhandledEvent"))[-1])[1]
        assert unhandled["types"] == ["InternalDispatchEvent"]
        assert unhandled["value"]["event_type"] == "HumanResponseEvent"

        answer = {"event": {"type": "AnswerEvent", "value": {"answer": "x"}}}
        assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
        await reader.rest()
    done = await http.get(f"/handlers/{handler_id}")
    assert done.json()["result"]["value"] == {"result": "got x"}
    # Internal events stay out of a default stream.
    default = await stream(http, handler_id, after_sequence="-1")
    assert [e["type"] for _, e in sse_events(default.content)] == ["AskEvent", "StopEvent"]


# -- unicode ---------------------------------------------------------------------------------

TRICKY = "Zoë 😀 𝄞 a\u2028b\u2029c\x85d ✓"
"""Non-ASCII (BMP and astral) plus the three characters line readers split on."""


def tricky_json(text: str) -> bytes:
    """How the wire writes ``text`` as a JSON string: raw UTF-8, line breakers escaped."""
    escaped = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return ('"' + escaped.replace("\x85", "\\u0085") + '"').encode()


async def test_unicode_round_trips_through_result_and_stream(http: httpx.AsyncClient) -> None:
    response = await http.post("/workflows/greet/run", json={"start_event": {"name": TRICKY}})
    assert response.status_code == 200
    greeting = f"Hello, {TRICKY}!"
    assert tricky_json(greeting) in response.content
    assert response.json()["result"]["value"] == {"result": {"greeting": greeting}}
    for raw in ("\u2028", "\u2029", "\x85"):
        assert raw.encode() not in response.content

    handler_id = response.json()["handler_id"]
    sse = await stream(http, handler_id, after_sequence="-1")
    assert tricky_json(greeting) in sse.content
    assert sse_events(sse.content)[-1][1]["value"] == {"result": {"greeting": greeting}}

    ndjson = await stream(http, handler_id, after_sequence="-1", sse="false")
    lines = ndjson.content.decode().splitlines()  # splits on U+2028 too, like the client
    assert len(lines) == 4
    assert json.loads(lines[-1])["value"]["result"]["greeting"] == greeting

    legacy = await http.get(f"/results/{handler_id}")
    assert legacy.json()["result"] == {"greeting": greeting}


async def test_unicode_sent_into_a_run_comes_back_unchanged(http: httpx.AsyncClient) -> None:
    handler_id = await start(http, "hitl")
    answer = {"event": {"type": "AnswerEvent", "value": {"answer": TRICKY}}}
    sent = await http.post(
        f"/events/{handler_id}",
        content=json.dumps(answer, ensure_ascii=False).encode(),
        headers={"content-type": "application/json"},
    )
    assert sent.status_code == 200
    done = await wait_until_finished(http, handler_id)
    assert done.json()["result"]["value"] == {"result": f"got {TRICKY}"}
    assert tricky_json(f"got {TRICKY}") in done.content


# -- handler listing -------------------------------------------------------------------------


async def test_handler_listing_pages_in_start_order(http: httpx.AsyncClient) -> None:
    ids = [f"page-{i}" for i in range(5)]
    for handler_id in ids:
        await run(http, "greet", {"handler_id": handler_id})

    pages: list[list[str]] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        body = (await http.get("/handlers", params=params)).json()
        assert list(body) == ["handlers", "next_cursor"]
        pages.append([h["handler_id"] for h in body["handlers"]])
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]

    newest_first = (await http.get("/handlers", params={"order": "desc", "limit": "3"})).json()
    assert [h["handler_id"] for h in newest_first["handlers"]] == ids[:1:-1]
    params = {"order": "desc", "limit": "3", "cursor": newest_first["next_cursor"]}
    rest = (await http.get("/handlers", params=params)).json()
    assert [h["handler_id"] for h in rest["handlers"]] == ids[1::-1]
    assert rest["next_cursor"] is None

    exact = (await http.get("/handlers", params={"limit": "5"})).json()
    assert [h["handler_id"] for h in exact["handlers"]] == ids
    assert exact["next_cursor"] is None


async def test_handler_listing_filters(http: httpx.AsyncClient) -> None:
    greeted = (await run(http, "greet"))["handler_id"]
    failed = (await http.post("/workflows/fail/run", json={})).json()["handler_id"]
    slow = await start(http, "slow", {"start_event": {"seconds": 30}})

    async def listed(query: str) -> list[str]:
        response = await http.get(f"/handlers?{query}")
        assert response.status_code == 200, response.text
        assert all(list(h) == HANDLER_KEYS for h in response.json()["handlers"])
        return [h["handler_id"] for h in response.json()["handlers"]]

    assert await listed("status=&workflow_name=") == [greeted, failed, slow]
    assert await listed("status=running&status=failed") == [failed, slow]
    assert await listed("workflow_name=greet&workflow_name=slow") == [greeted, slow]
    assert await listed("status=completed&workflow_name=fail") == []
    await http.post(f"/handlers/{slow}/cancel")


# -- HTTP edges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/health"),
        ("DELETE", "/handlers/some-id"),
        ("GET", "/workflows/greet/run"),
        ("PUT", "/events/some-id"),
        ("GET", "/handlers/some-id/cancel"),
        ("POST", "/workflows/greet/schema"),
    ],
)
@memory_only
async def test_wrong_method_is_405_with_a_json_detail(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/does/not/exist"), ("GET", "/workflows/greet"), ("POST", "/nowhere"), ("GET", "/")],
)
@memory_only
async def test_unknown_path_is_404_with_a_json_detail(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Not Found"}


@memory_only
async def test_no_cors_headers_by_default(http: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    simple = await http.get("/health", headers=origin)
    assert not any(name.startswith("access-control-") for name in simple.headers)
    preflight = await http.options(
        "/workflows/greet/run",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 405
    assert not any(name.startswith("access-control-") for name in preflight.headers)


class _Db:
    """A resource a step receives."""


def _get_db() -> _Db:
    return _Db()


class WithResource(Workflow):
    """One step that needs a resource: the graph has a resource node."""

    @step
    async def go(self, ev: StartEvent, db: Annotated[_Db, Resource(_get_db)]) -> StopEvent:
        return StopEvent(result=1)


async def test_representation_leaves_out_server_paths() -> None:
    server = WorkflowServer()
    server.add_workflow("res", WithResource())
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url) as http:
        graph = (await http.get("/workflows/res/representation")).json()["graph"]
    [resource] = [node for node in graph["nodes"] if node["node_type"] == "resource"]
    assert resource["getter_name"] == "_get_db"
    assert resource["source_file"] is None
    assert resource["source_line"] is None

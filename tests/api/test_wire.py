"""Wire fidelity over real HTTP: every event format the framework writes, hostile
cursors and headers, and events that make no sense.

The codec's shapes are covered property-based in ``tests/unit/test_codec_properties.py``;
here each reaches a real run through the routes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header
from workflows.context.serializers import JsonSerializer
from workflows.events import StartEvent, StopEvent

from llama_workflows_asgi import ServiceConfig, WorkflowServer, workflow_router
from tests.support.http import run, start, wait_until_finished, wait_until_idle
from tests.support.servers import serving
from tests.support.stores import StoreFactory
from tests.support.workflows import (
    AnswerEvent,
    DecisionEvent,
    MyStart,
    make_workflows,
    pattern_workflows,
)

memory_only = pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
SERIALIZER = JsonSerializer()


def cursor_of(value: Any) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def assert_400(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, f"{response.request.url}: {response.text}"
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail


# -- the engine's serializer format ----------------------------------------------------------


@memory_only
@pytest.mark.parametrize("as_text", [False, True])
async def test_a_start_event_in_the_serializer_format_keeps_its_fields(
    http: httpx.AsyncClient, as_text: bool
) -> None:
    for workflow, event, expected in [
        ("greet", StartEvent(name="env"), {"result": {"greeting": "Hello, env!"}}),
        ("custom", MyStart(topic="bees", count=2), {"answer": 84, "topic": "bees"}),
    ]:
        encoded: Any = SERIALIZER.serialize_value(event)
        body = {"start_event": json.dumps(encoded) if as_text else encoded}
        assert (await run(http, workflow, body))["result"]["value"] == expected


@memory_only
async def test_a_stop_event_named_as_start_event_is_refused(http: httpx.AsyncClient) -> None:
    for payload in [
        SERIALIZER.serialize_value(StopEvent(result="x")),
        json.dumps(SERIALIZER.serialize_value(StopEvent(result="x"))),
        {"qualified_name": "workflows.events.StopEvent", "value": {}},
        {"type": "MyStop", "value": {"answer": 1, "topic": "t"}},
    ]:
        for route in ("run", "run-nowait"):
            response = await http.post(f"/workflows/custom/{route}", json={"start_event": payload})
            assert_400(response, "start_event", "Start event must be")
    assert (await http.get("/handlers")).json()["handlers"] == []


@memory_only
@pytest.mark.parametrize("as_text", [False, True])
async def test_a_sent_event_in_the_serializer_format_reaches_the_run(
    http: httpx.AsyncClient, as_text: bool
) -> None:
    handler_id = await start(http, "hitl")
    await wait_until_idle(http, handler_id)
    encoded: Any = SERIALIZER.serialize_value(AnswerEvent(answer="Zed"))
    sent = await http.post(
        f"/events/{handler_id}", json={"event": json.dumps(encoded) if as_text else encoded}
    )
    assert sent.status_code == 200, sent.text
    done = (await wait_until_finished(http, handler_id)).json()
    assert done["result"]["value"] == {"result": "got Zed"}


@pytest.fixture
async def context_api(make_store: StoreFactory) -> AsyncIterator[httpx.AsyncClient]:
    server = WorkflowServer(make_store(), config=ServiceConfig(accept_context_api=True))
    server.add_workflow("counter", make_workflows()["counter"])
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


@memory_only
async def test_a_context_may_come_as_json_text(context_api: httpx.AsyncClient) -> None:
    # A state store written by the engine's serializer: its values in that format.
    state = {"state_data": {"_data": {"count": SERIALIZER.serialize(4)}}}
    for context in ({"state": state}, json.dumps({"state": state})):
        done = await run(context_api, "counter", {"context": context})
        assert done["result"]["value"] == {"result": {"count": 5}}, done


# -- events that make no sense ------------------------------------------------------------------


@memory_only
async def test_start_and_stop_events_cannot_be_sent_into_a_run(http: httpx.AsyncClient) -> None:
    handler_id = await start(http, "hitl")
    await wait_until_idle(http, handler_id)
    for event, words in [
        ({"type": "StartEvent", "value": {}}, ("StartEvent", "already started")),
        (SERIALIZER.serialize_value(StartEvent()), ("StartEvent",)),
        ({"type": "StopEvent", "value": {"result": "forged"}}, ("StopEvent", "outcome")),
        (SERIALIZER.serialize_value(StopEvent(result="forged")), ("StopEvent",)),
    ]:
        assert_400(await http.post(f"/events/{handler_id}", json={"event": event}), *words)
    assert (await http.get(f"/handlers/{handler_id}")).status_code == 202
    answer = {"event": {"type": "AnswerEvent", "value": {"answer": "real"}}}
    assert (await http.post(f"/events/{handler_id}", json=answer)).status_code == 200
    done = (await wait_until_finished(http, handler_id)).json()
    assert done["result"]["value"] == {"result": "got real"}


@pytest.fixture
async def waiter(make_store: StoreFactory) -> AsyncIterator[httpx.AsyncClient]:
    server = WorkflowServer(make_store())
    for name, (workflow, additional) in pattern_workflows().items():
        server.add_workflow(name, workflow, additional)
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


@memory_only
async def test_an_event_naming_the_step_that_waits_for_it_is_delivered(
    waiter: httpx.AsyncClient,
) -> None:
    handler_id = await start(waiter, "waiter")
    await wait_until_idle(waiter, handler_id)
    decision = {"type": DecisionEvent.__name__, "value": {"approved": False, "note": "no"}}
    sent = await waiter.post(f"/events/{handler_id}", json={"event": decision, "step": "review"})
    assert sent.status_code == 200, sent.text
    done = (await wait_until_finished(waiter, handler_id)).json()
    assert done["result"]["value"] == {"approved": False, "notes": ["no"]}
    missing = await waiter.post(f"/events/{handler_id}", json={"event": decision, "step": "nope"})
    assert missing.status_code == 409  # finished by now; an unknown step is checked after


@memory_only
async def test_an_unknown_step_is_refused(waiter: httpx.AsyncClient) -> None:
    handler_id = await start(waiter, "waiter")
    decision = {"type": DecisionEvent.__name__, "value": {"approved": True}}
    response = await waiter.post(f"/events/{handler_id}", json={"event": decision, "step": "nope"})
    assert_400(response, "Step nope does not exist")
    await waiter.post(f"/handlers/{handler_id}/cancel")


# -- handler ids and idempotency keys -------------------------------------------------------


@memory_only
async def test_handler_ids_are_what_a_url_path_segment_carries(http: httpx.AsyncClient) -> None:
    for bad in ["a?b", "a#b", "100%", "a b", "a/b", "é", "a+b", "a,b", "", "x" * 256, "..", "."]:
        assert_400(await http.post("/workflows/greet/run", json={"handler_id": bad}), "handler_id")
    assert (await http.get("/handlers")).json()["handlers"] == []
    for good in ["user:alice@example.com", "A-Z_a.z~0-9", "x" * 255, "..."]:
        done = await run(http, "greet", {"handler_id": good})
        assert done["handler_id"] == good
        assert (await http.get(f"/handlers/{good}")).status_code == 200


@memory_only
async def test_an_empty_idempotency_key_is_refused(http: httpx.AsyncClient) -> None:
    for key in [""]:  # (surrounding spaces are not part of a header value)
        response = await http.post(
            "/workflows/greet/run", json={}, headers={"Idempotency-Key": key}
        )
        assert_400(response, "Idempotency-Key")
    assert (await http.get("/handlers")).json()["handlers"] == []


@pytest.fixture
async def two_callers(make_store: StoreFactory) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async def caller(x_user: Annotated[str, Header()]) -> str:
        return x_user

    app = FastAPI()
    scoped = workflow_router(make_store(), workflows=make_workflows(), principal=caller)
    app.include_router(scoped)
    async with serving(app) as url:
        clients = {
            user: httpx.AsyncClient(base_url=url, headers={"X-User": user}, timeout=30)
            for user in ("alice", "bob")
        }
        try:
            yield clients
        finally:
            for client in clients.values():
                await client.aclose()


@memory_only
async def test_another_callers_handler_id_answers_one_text_whatever_its_status(
    two_callers: dict[str, httpx.AsyncClient],
) -> None:
    alice, bob = two_callers["alice"], two_callers["bob"]
    await start(alice, "slow", {"handler_id": "busy", "start_event": {"seconds": 30}})
    await run(alice, "greet", {"handler_id": "done"})
    answers = set()
    for handler_id in ("busy", "done"):
        for workflow in ("greet", "slow"):
            response = await bob.post(
                f"/workflows/{workflow}/run-nowait", json={"handler_id": handler_id}
            )
            assert response.status_code == 409, response.text
            answers.add(response.json()["detail"].replace(handler_id, "<id>"))
    assert answers == {"Handler id '<id>' is already in use"}
    # The owner still learns that its own handler is running.
    mine = await alice.post("/workflows/slow/run-nowait", json={"handler_id": "busy"})
    assert mine.json()["detail"] == "Handler 'busy' is already running"
    await alice.post("/handlers/busy/cancel")


# -- hostile cursors and headers ----------------------------------------------------------------


@memory_only
async def test_hostile_cursors_and_headers_are_400s(http: httpx.AsyncClient) -> None:
    done = (await run(http, "greet"))["handler_id"]
    events = f"/events/{done}"
    for params, headers, words in [
        ({"after_sequence": str(2**63)}, {}, ("after_sequence",)),
        ({"after_sequence": "9" * 40}, {}, ("after_sequence",)),
        ({"after_sequence": "²"}, {}, ("after_sequence",)),
        (
            {"after_sequence": "-1"},
            {"Last-Event-ID": "99999999999999999999999"},
            ("Last-Event-ID",),
        ),
        ({"after_sequence": "-1"}, {"Last-Event-ID": str(2**63)}, ("Last-Event-ID",)),
    ]:
        assert_400(await http.get(events, params=params, headers=headers), *words)
    # Not an integer at all: ignored, as the reference does.
    # "²" arrives as the byte 0xB2, which servers decode as latin-1: isdigit() but no int.
    for odd in ["²".encode("latin-1"), b"abc", b"-5", b"1.5", "١٢".encode()]:
        response = await http.get(
            events, params={"after_sequence": "-1"}, headers={"Last-Event-ID": odd}
        )
        assert response.status_code == 200, (odd, response.text)
    biggest = await http.get(events, params={"after_sequence": str(2**63 - 1)})
    assert biggest.status_code == 204

    for value in [
        ["0001-01-01T00:00:00+14:00", "x"],
        ["9999-12-31T23:59:59-14:00", "x"],
        ["2024-01-01T00:00:00+00:00", "x", "extra"],
        [[[[[]]]]],
        "[" * 700,
    ]:
        response = await http.get("/handlers", params={"cursor": cursor_of(value)})
        assert_400(response, "Invalid cursor")
    # JSON text nested deeper than a parser goes, inside a JSON string (which no
    # body depth limit sees): a 400 naming the field.
    nested = "[" * 5000 + "]" * 5000
    assert_400(await http.post("/workflows/greet/run", json={"start_event": nested}), "start_event")
    assert_400(await http.post("/workflows/greet/run", json={"context": nested}), "context")
    waiting = await start(http, "hitl")
    assert_400(await http.post(f"/events/{waiting}", json={"event": nested}), "nested")
    await http.post(f"/handlers/{waiting}/cancel")

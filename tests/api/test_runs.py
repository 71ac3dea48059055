"""``api.runs``: ``POST /workflows/{name}/run`` and ``/run-nowait`` start runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llama_workflows_asgi import HandlerQuery, PersistentHandler
from llama_workflows_asgi.api import runs
from llama_workflows_asgi.api.deps import EdgeLimits
from llama_workflows_asgi.service import WorkflowService
from tests.support.http import HANDLER_KEYS
from tests.support.routes import Edge, header_user, routes_of, run_workflows, sqlite_store

HELLO_ADA = {
    "value": {"result": {"greeting": "Hello, Ada!"}},
    "qualified_name": "workflows.events.StopEvent",
    "type": "StopEvent",
    "types": None,
}


memory_only = pytest.mark.parametrize("edge", ["memory"], indirect=True)
"""For checks of request parsing that no store takes part in (every store: ``test_errors``)."""


@pytest.fixture(params=["memory", "sqlite"])
async def edge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Edge]:
    served = run_workflows()
    store = await sqlite_store(tmp_path) if request.param == "sqlite" else None
    limits = EdgeLimits(max_json_depth=64, max_body_size=512)
    async with routes_of(
        runs, workflows=served, store=store, principal=header_user, limits=limits
    ) as e:
        yield e


async def rows(service: WorkflowService) -> list[PersistentHandler]:
    return await service.store.query(HandlerQuery(load_ctx=False))


async def test_run_nowait_answers_the_running_handler(edge: Edge) -> None:
    response = await edge.http.post(
        "/workflows/slow/run-nowait", json={"start_event": {"seconds": 60}}
    )
    assert response.status_code == 200
    body = response.json()
    assert list(body) == HANDLER_KEYS
    assert (body["workflow_name"], body["status"]) == ("slow", "running")
    assert (body["result"], body["error"], body["completed_at"]) == (None, None, None)
    [row] = await rows(edge.service)
    assert (row.handler_id, row.status, row.principal) == (body["handler_id"], "running", "ada")


async def test_run_answers_when_finished(edge: Edge) -> None:
    response = await edge.http.post("/workflows/greet/run", json={"start_event": {"name": "Ada"}})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == HANDLER_KEYS
    assert (body["status"], body["result"]) == ("completed", HELLO_ADA)
    assert body["completed_at"] is not None


async def test_a_failed_run_is_a_500_with_its_handler(edge: Edge) -> None:
    response = await edge.http.post("/workflows/fail/run", json={})
    assert response.status_code == 500
    assert (response.json()["status"], response.json()["error"]) == ("failed", "kaboom")


@memory_only
@pytest.mark.parametrize(
    "body",
    [
        {"start_event": {"name": "Ada"}},
        {"start_event": {"_data": {"name": "Ada"}}},
        {"start_event": {"type": "StartEvent", "value": {"name": "Ada"}, "qualified_name": None}},
        {"start_event": json.dumps({"name": "Ada"})},
        {"kwargs": {"name": "Ada"}},
        {"start_event": {"name": "Ada"}, "context": {}},
    ],
    ids=["bare", "data", "envelope", "string", "kwargs", "empty-context"],
)
async def test_every_start_event_form_is_accepted(edge: Edge, body: dict[str, Any]) -> None:
    response = await edge.http.post("/workflows/greet/run", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == HELLO_ADA


async def test_a_custom_start_class_is_validated(edge: Edge) -> None:
    done = await edge.http.post("/workflows/custom/run", json={"start_event": {"topic": "cats"}})
    assert done.json()["result"]["value"] == {"answer": 42, "topic": "cats"}
    refused = await edge.http.post("/workflows/custom/run", json={"start_event": {"count": 2}})
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("Invalid start_event: ")
    assert "topic" in refused.json()["detail"]


@memory_only
@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "Invalid JSON body: "),
        (b"{not json", "Invalid JSON body: "),
        (b"[]", "Request body must be a JSON object"),
        (b'{"handler_id": 7}', "Invalid handler_id: it must be a string"),
        (b'{"context": {"x": 1}}', "Context API is disabled"),
        (b'{"context": [1]}', "Invalid context: it must be a JSON object"),
        (b'{"start_event": {"name": "' + b"x" * 600 + b'"}}', "exceeds the 512-byte limit"),
    ],
    ids=["empty", "invalid", "array", "handler-id", "context", "context-type", "too-large"],
)
async def test_bad_bodies_are_refused_and_write_nothing(
    edge: Edge, content: bytes, detail: str
) -> None:
    for path in ("/workflows/greet/run", "/workflows/greet/run-nowait"):
        response = await edge.http.post(path, content=content)
        assert response.status_code in (400, 413), response.text
        assert detail in response.json()["detail"]
    assert await rows(edge.service) == []


@memory_only
async def test_an_oversized_body_is_413(edge: Edge) -> None:
    response = await edge.http.post("/workflows/greet/run", content=b"{" + b" " * 600 + b"}")
    assert (response.status_code, response.json()["detail"]) == (
        413,
        "Request body exceeds the 512-byte limit",
    )


@memory_only
async def test_unknown_workflow_is_404_before_the_body_is_read(edge: Edge) -> None:
    response = await edge.http.post("/workflows/nope/run-nowait", content=b"{not json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Workflow 'nope' not found"}


async def test_a_chosen_handler_id_conflicts_while_it_runs(edge: Edge) -> None:
    body = {"handler_id": "mine", "start_event": {"seconds": 60}}
    first = await edge.http.post("/workflows/slow/run-nowait", json=body)
    assert first.json()["handler_id"] == "mine"
    again = await edge.http.post("/workflows/slow/run-nowait", json=body)
    assert again.status_code == 409
    assert "mine" in again.json()["detail"]


async def test_an_idempotency_key_replays_its_first_handler(edge: Edge) -> None:
    key = {"Idempotency-Key": "order-7"}
    body = {"start_event": {"seconds": 60}}
    first = await edge.http.post("/workflows/slow/run-nowait", json=body, headers=key)
    replay = await edge.http.post("/workflows/slow/run-nowait", json=body, headers=key)
    assert replay.json()["handler_id"] == first.json()["handler_id"]
    other = await edge.http.post("/workflows/slow/run-nowait", json={}, headers=key)
    assert other.status_code == 409
    assert len(await rows(edge.service)) == 1
    too_long = await edge.http.post(
        "/workflows/slow/run-nowait", json={}, headers={"Idempotency-Key": "k" * 256}
    )
    assert too_long.status_code == 400
    assert "idempotency-key" in too_long.json()["detail"]


@memory_only
async def test_only_the_two_start_routes_are_added(edge: Edge) -> None:
    paths = edge.app.openapi()["paths"]
    assert {path: list(methods) for path, methods in paths.items()} == {
        "/workflows/{name}/run-nowait": ["post"],
        "/workflows/{name}/run": ["post"],
    }
    documented = paths["/workflows/{name}/run"]["post"]
    assert "requestBody" in documented
    assert {"404", "400", "409", "413", "500", "503"} <= set(documented["responses"])

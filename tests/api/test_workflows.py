"""``api.workflows``: the registered workflows, their schemas, events and graphs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import Header

from llama_workflows_asgi.api import workflows
from tests.support.routes import Edge, routes_of
from tests.support.workflows import CustomWorkflow, DecisionEvent, GreetWorkflow, WaiterWorkflow

PATHS = ["/workflows/{}/schema", "/workflows/{}/events", "/workflows/{}/representation"]


async def user(x_user: str = Header()) -> str:
    return x_user


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    served = {
        "greet": GreetWorkflow(),
        "custom": CustomWorkflow(),
        "waiter": (WaiterWorkflow(timeout=None), [DecisionEvent]),
    }
    # Scoped to a caller: these routes list what is served and ask for none.
    async with routes_of(workflows, workflows=served, principal=user) as edge:
        yield edge


async def test_lists_names_in_registration_order(edge: Edge) -> None:
    # No x-user header is sent, yet the scoped router answers.
    response = await edge.http.get("/workflows")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b'{"workflows":["greet","custom","waiter"]}'


async def test_schema_is_the_start_and_stop_classes(edge: Edge) -> None:
    body = (await edge.http.get("/workflows/custom/schema")).json()
    assert list(body) == ["start", "stop"]
    assert body["start"]["title"] == "MyStart"
    assert set(body["start"]["properties"]) >= {"topic", "count"}
    assert body["start"]["required"] == ["topic"]
    assert body["stop"]["title"] == "MyStop"
    assert set(body["stop"]["properties"]) >= {"answer", "topic"}


async def test_events_are_the_declared_ones_with_additional_events(edge: Edge) -> None:
    titles = [
        e["title"] for e in (await edge.http.get("/workflows/waiter/events")).json()["events"]
    ]
    assert "DecisionEvent" in titles  # declared through additional_events only
    assert "StartEvent" in titles
    # Streamed only, never awaited: not an event a caller may send.
    assert "QuestionEvent" not in titles
    greet = (await edge.http.get("/workflows/greet/events")).json()["events"]
    assert "ProgressEvent" not in [e["title"] for e in greet]


async def test_representation_is_the_graph_of_steps_and_events(edge: Edge) -> None:
    response = await edge.http.get("/workflows/greet/representation")
    assert response.status_code == 200
    graph = response.json()["graph"]
    assert graph["name"] == "GreetWorkflow"
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert nodes["greet"]["node_type"] == "step"
    kinds = {node["node_type"] for node in graph["nodes"]}
    assert {"step", "event"} <= kinds
    assert all({"source", "target"} <= set(edge) for edge in graph["edges"])
    assert {e["source"] for e in graph["edges"]} & {"greet"}


@pytest.mark.parametrize("path", PATHS)
async def test_unknown_workflow_is_404_naming_it(edge: Edge, path: str) -> None:
    response = await edge.http.get(path.format("nope"))
    assert response.status_code == 404
    assert response.json() == {"detail": "Workflow 'nope' not found"}


async def test_only_reading_routes_are_added(edge: Edge) -> None:
    # The module serves what is registered; starting runs is api.runs' work.
    assert (await edge.http.post("/workflows/greet/run", json={})).status_code in (404, 405)
    assert (await edge.http.post("/workflows")).status_code == 405
    paths = edge.app.openapi()["paths"]
    assert set(paths) == {"/workflows", *(p.format("{name}") for p in PATHS)}
    assert all(list(methods) == ["get"] for methods in paths.values())

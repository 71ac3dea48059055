"""The example host app (``examples/host_app/app.py``): the workflow API inside someone
else's FastAPI app, under a prefix, behind its API-key auth, scoped per user.

Served for real with uvicorn; the official ``WorkflowClient`` talks to it through an
``httpx.AsyncClient`` carrying the prefix and the key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from llama_agents.client import WorkflowClient
from sqlalchemy import text
from workflows.events import HumanResponseEvent, StartEvent

from examples.host_app import app as example
from examples.host_app.app import create_app
from llama_workflows_asgi import (
    MemoryWorkflowStore,
    WorkflowService,
    get_workflow_service,
)
from tests.support.http import HANDLER_KEYS, compact
from tests.support.rows import sql_reader
from tests.support.servers import serving
from tests.support.stores import StoreFactory

PREFIX = "/api/wf"
KEYS = {"alice-key": "alice", "bob-key": "bob"}

memory_only = pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
"""For checks of routing, auth and documentation, which no store takes part in."""

# Every workflow route, with its path parameters filled in.
WORKFLOW_ROUTES = [
    ("GET", "/health"),
    ("GET", "/workflows"),
    ("GET", "/workflows/greet/schema"),
    ("GET", "/workflows/greet/events"),
    ("GET", "/workflows/greet/representation"),
    ("POST", "/workflows/greet/run"),
    ("POST", "/workflows/greet/run-nowait"),
    ("GET", "/handlers"),
    ("GET", "/handlers/some-id"),
    ("POST", "/handlers/some-id/cancel"),
    ("GET", "/results/some-id"),
    ("GET", "/events/some-id"),
    ("POST", "/events/some-id"),
]


@pytest.fixture
def host_app(make_store: StoreFactory) -> FastAPI:
    return create_app(store=make_store(), api_keys=KEYS, prefix=PREFIX)


@pytest.fixture
async def host_url(host_app: FastAPI) -> AsyncIterator[str]:
    async with serving(host_app) as url:
        yield url


@asynccontextmanager
async def user_http(url: str, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the host app sending ``key`` as ``X-API-Key`` (none if ``None``)."""
    headers = {} if key is None else {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture
async def alice(host_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with user_http(host_url + PREFIX, "alice-key") as http:
        yield http


@pytest.fixture
async def bob(host_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with user_http(host_url + PREFIX, "bob-key") as http:
        yield http


@pytest.fixture
def alice_client(alice: httpx.AsyncClient) -> WorkflowClient:
    return WorkflowClient(httpx_client=alice)


@pytest.fixture
def bob_client(bob: httpx.AsyncClient) -> WorkflowClient:
    return WorkflowClient(httpx_client=bob)


# -- the official client through the prefix and the key ------------------------------------


@memory_only
async def test_client_reads_health_and_workflow_metadata(alice_client: WorkflowClient) -> None:
    assert (await alice_client.is_healthy()).status == "healthy"
    assert (await alice_client.list_workflows()).workflows == ["greet", "approval", "report"]
    schema = await alice_client.get_workflow_schema("greet")
    assert (schema.start["title"], schema.stop["title"]) == ("StartEvent", "StopEvent")
    events = await alice_client.get_workflow_events_schema("approval")
    titles = {event["title"] for event in events.events}
    assert {"InputRequiredEvent", "HumanResponseEvent"} <= titles
    graph = await alice_client.get_workflow_graph("approval")
    assert graph.graph.name == "ApprovalWorkflow"
    assert {"ask", "decide"} <= {node.id for node in graph.graph.nodes}


async def test_client_runs_and_streams(alice_client: WorkflowClient) -> None:
    done = await alice_client.run_workflow("greet", start_event=StartEvent(name="Ada"))
    assert done.status == "completed"
    assert done.result is not None
    assert done.result.value == {"result": {"greeting": "Hello, Ada!"}}

    started = await alice_client.run_workflow_nowait("greet", start_event=StartEvent(name="Bo"))
    assert started.status == "running"
    seen = [(e.type, e.value) async for e in alice_client.get_workflow_events(started.handler_id)]
    assert seen == [
        ("ProgressEvent", {"message": "looking up Bo"}),
        ("ProgressEvent", {"message": "writing the greeting"}),
        ("StopEvent", {"result": {"greeting": "Hello, Bo!"}}),
    ]
    result = await alice_client.get_result(started.handler_id)
    assert result.result is not None
    assert result.result.value == {"result": {"greeting": "Hello, Bo!"}}
    waited = await alice_client.wait_for_handler(started.handler_id, poll_interval=0.05)
    assert waited.status == "completed"


async def test_client_answers_an_input_request(alice_client: WorkflowClient) -> None:
    started = await alice_client.run_workflow_nowait("approval", start_event={"item": "laptop"})
    seen: list[str] = []
    async for event in alice_client.get_workflow_events(started.handler_id):
        seen.append(event.type)
        if event.type == "InputRequiredEvent":
            assert event.value == {"_data": {"prefix": "Approve laptop?"}}
            answer = HumanResponseEvent(response="yes")
            assert (await alice_client.send_event(started.handler_id, answer)).status == "sent"
    assert seen == ["InputRequiredEvent", "StopEvent"]
    handler = await alice_client.get_handler(started.handler_id)
    assert handler.result is not None
    assert handler.result.value == {"result": {"item": "laptop", "approved": True}}


async def test_client_lists_filters_and_cancels(alice_client: WorkflowClient) -> None:
    greeted = await alice_client.run_workflow("greet")
    report = await alice_client.run_workflow_nowait("report", start_event={"seconds": 60})
    doomed = await alice_client.run_workflow_nowait("report", start_event={"seconds": 60})

    everything = await alice_client.get_handlers()
    assert [h.handler_id for h in everything.handlers] == [
        greeted.handler_id,
        report.handler_id,
        doomed.handler_id,
    ]
    running = await alice_client.get_handlers(status=["running"], workflow_name=["report"])
    assert {h.handler_id for h in running.handlers} == {report.handler_id, doomed.handler_id}
    completed = await alice_client.get_handlers(status=["completed"])
    assert [h.handler_id for h in completed.handlers] == [greeted.handler_id]

    assert (await alice_client.cancel_handler(report.handler_id)).status == "cancelled"
    with pytest.raises(httpx.HTTPStatusError) as cancelled:
        await alice_client.get_handler(report.handler_id)
    assert cancelled.value.response.json()["status"] == "cancelled"

    assert (await alice_client.cancel_handler(doomed.handler_id, purge=True)).status == "deleted"
    with pytest.raises(httpx.HTTPStatusError) as gone:
        await alice_client.get_handler(doomed.handler_id)
    assert gone.value.response.status_code == 404


# -- authentication and per-user scoping ---------------------------------------------------


@memory_only
async def test_every_workflow_route_requires_a_known_api_key(
    host_url: str, alice: httpx.AsyncClient
) -> None:
    for key in (None, "wrong-key", ""):
        async with user_http(host_url + PREFIX, key) as anonymous:
            for method, path in WORKFLOW_ROUTES:
                response = await anonymous.request(method, path, json={})
                assert response.status_code == 401, f"{key!r} {method} {path}: {response.text}"
                assert response.json() == {"detail": "Missing or unknown API key"}
                assert response.headers["www-authenticate"] == "APIKey"
    assert (await alice.get("/handlers")).json()["handlers"] == []


@memory_only
async def test_the_open_health_route_needs_no_key(host_url: str) -> None:
    async with user_http(host_url, None) as anonymous:
        assert (await anonymous.get("/health")).json() == {"status": "healthy"}
        assert (await anonymous.get(f"{PREFIX}/health")).status_code == 401


async def test_bob_cannot_reach_alices_handlers(
    alice_client: WorkflowClient, bob: httpx.AsyncClient, bob_client: WorkflowClient
) -> None:
    done = await alice_client.run_workflow("greet", start_event=StartEvent(name="Ada"))
    waiting = await alice_client.run_workflow_nowait("approval")
    bobs = await bob_client.run_workflow("greet")

    answer = {"event": {"type": "HumanResponseEvent", "value": {"response": "yes"}}}
    for handler_id in (done.handler_id, waiting.handler_id):
        not_found = {"detail": f"Handler '{handler_id}' not found"}
        for method, path, body in [
            ("GET", f"/handlers/{handler_id}", None),
            ("GET", f"/results/{handler_id}", None),
            ("GET", f"/events/{handler_id}?after_sequence=-1", None),
            ("POST", f"/events/{handler_id}", answer),
            ("POST", f"/handlers/{handler_id}/cancel", None),
            ("POST", f"/handlers/{handler_id}/cancel?purge=true", None),
        ]:
            response = await bob.request(method, path, json=body)
            assert (response.status_code, response.json()) == (404, not_found), (method, path)

    assert [h.handler_id for h in (await bob_client.get_handlers()).handlers] == [bobs.handler_id]
    mine = await alice_client.get_handlers()
    assert {h.handler_id for h in mine.handlers} == {done.handler_id, waiting.handler_id}
    # Bob's attempts changed nothing: Alice's waiting run still waits for her answer.
    assert (await alice_client.get_handler(waiting.handler_id)).status == "running"
    await alice_client.cancel_handler(waiting.handler_id)


async def test_handler_ids_are_reusable_only_by_their_owner(
    alice: httpx.AsyncClient, alice_client: WorkflowClient, bob: httpx.AsyncClient
) -> None:
    first = await alice_client.run_workflow("greet", handler_id="shared-name")
    taken = await bob.post("/workflows/greet/run", json={"handler_id": "shared-name"})
    assert taken.status_code == 409
    assert "shared-name" in taken.json()["detail"]

    again = await alice_client.run_workflow("greet", handler_id="shared-name")
    assert again.run_id != first.run_id
    # Reuse means "run this workflow again": another workflow may not take the id over.
    other_workflow = await alice.post(
        "/workflows/report/run-nowait", json={"handler_id": "shared-name"}
    )
    assert other_workflow.status_code == 409
    assert (await alice_client.get_handler("shared-name")).run_id == again.run_id


async def test_idempotency_keys_are_per_user(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    headers = {"Idempotency-Key": "same-key"}
    body = {"start_event": {"name": "X"}}
    alices = await alice.post("/workflows/greet/run-nowait", json=body, headers=headers)
    bobs = await bob.post("/workflows/greet/run-nowait", json=body, headers=headers)
    replay = await alice.post("/workflows/greet/run-nowait", json=body, headers=headers)
    assert [r.status_code for r in (alices, bobs, replay)] == [200, 200, 200]
    assert bobs.json()["handler_id"] != alices.json()["handler_id"]
    assert replay.json()["handler_id"] == alices.json()["handler_id"]


# -- host endpoints and dependencies -------------------------------------------------------


async def test_host_endpoints_start_and_read_runs_through_the_service(
    host_url: str, alice: httpx.AsyncClient
) -> None:
    async with user_http(host_url, "alice-key") as host, user_http(host_url, "bob-key") as other:
        started = await host.post("/greetings", json={"name": "Ada"})
        assert started.status_code == 200, started.text
        handler_id = started.json()["handler_id"]
        assert started.json()["status"] == "running"

        status = await poll_greeting(host, handler_id)
        assert status == {
            "handler_id": handler_id,
            "status": "completed",
            "greeting": "Hello, Ada!",
        }
        # The run belongs to Alice on the workflow API too, and to nobody else.
        assert (await alice.get(f"/handlers/{handler_id}")).status_code == 200
        assert (await other.get(f"/greetings/{handler_id}")).status_code == 404
        async with user_http(host_url, None) as anonymous:
            refused = await anonymous.post("/greetings", json={"name": "Eve"})
            assert refused.status_code == 401


async def poll_greeting(host: httpx.AsyncClient, handler_id: str) -> dict[str, Any]:
    for _ in range(500):
        response = await host.get(f"/greetings/{handler_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] != "running":
            body: dict[str, Any] = response.json()
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"greeting {handler_id} never finished")


async def test_dependency_override_swaps_the_service_for_host_endpoints(
    host_app: FastAPI, host_url: str, alice: httpx.AsyncClient
) -> None:
    replacement = WorkflowService(MemoryWorkflowStore(), scoped=True)
    replacement.add_workflow("greet", example.GreetingWorkflow())
    async with replacement.running_context(), user_http(host_url, "alice-key") as host:
        host_app.dependency_overrides[get_workflow_service] = lambda: replacement
        try:
            started = await host.post("/greetings", json={"name": "Swapped"})
            handler_id = started.json()["handler_id"]
            assert (await poll_greeting(host, handler_id))["greeting"] == "Hello, Swapped!"
            done = await replacement.wait_for(handler_id, principal="alice")
            assert done.status == "completed"
            # The workflow routes keep the router's own service, which never saw this run.
            assert (await alice.get(f"/handlers/{handler_id}")).status_code == 404
        finally:
            host_app.dependency_overrides.clear()
        status = await host.get("/status")
        assert status.json()["workflows"] == ["greet", "approval", "report"]


async def test_lifespans_are_merged(make_store: StoreFactory) -> None:
    app = create_app(store=make_store(), api_keys=KEYS, prefix=PREFIX)
    async with serving(app) as url, user_http(url, None) as http:
        assert app.state.stopped_at is None  # the host's lifespan started...
        service = app.state.workflow_service  # ...and so did the router's
        assert service.running
        status = (await http.get("/status")).json()
        assert status["started_at"] == app.state.started_at.isoformat()
        async with user_http(url + PREFIX, "bob-key") as bob:
            assert (await bob.get("/health")).json() == {"status": "healthy"}
    assert app.state.stopped_at is not None
    assert not service.running


async def test_factory_opens_the_sqlite_file_it_is_given(tmp_path: Path) -> None:
    database = tmp_path / "host.db"
    app = create_app(f"sqlite+aiosqlite:///{database}", api_keys=KEYS)
    async with serving(app) as url, user_http(url, "alice-key") as host:
        started = await host.post("/greetings", json={"name": "File"})
        await poll_greeting(host, started.json()["handler_id"])
        listed = await host.get("/workflows-api/handlers")
        assert [h["handler_id"] for h in listed.json()["handlers"]] == [
            started.json()["handler_id"]
        ]
    async with sql_reader(f"sqlite+aiosqlite:///{database}") as engine, engine.connect() as conn:
        rows = (await conn.execute(text("SELECT principal, status FROM workflow_handlers"))).all()
    assert [tuple(row) for row in rows] == [("alice", "completed")]


def test_module_level_app_serves_under_the_documented_prefix() -> None:
    paths = set(example.app.openapi()["paths"])
    assert {"/workflows-api/workflows", "/workflows-api/handlers", "/greetings"} <= paths


async def test_factory_reads_database_url_and_api_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "from-env.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("API_KEYS", "k1:carol, k2:dave")
    app = create_app()
    async with serving(app) as url, user_http(url + "/workflows-api", "k1") as carol:
        assert (await carol.post("/workflows/greet/run", json={})).status_code == 200
    assert database.exists()


# -- OpenAPI -----------------------------------------------------------------------------------


@memory_only
async def test_openapi_documents_every_workflow_route(host_url: str) -> None:
    async with user_http(host_url, None) as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    for method, path in WORKFLOW_ROUTES:
        template = (
            path.replace("greet", "{name}").replace("some-id", "{handler_id}")
            if path != "/workflows"
            else path
        )
        operation = paths[PREFIX + template][method.lower()]
        assert operation["tags"] == ["workflows"], template
        assert operation["security"] == [{"APIKeyHeader": []}], template
    assert document["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "description": "Your API key",
        "in": "header",
        "name": "X-API-Key",
    }

    run = paths[f"{PREFIX}/workflows/{{name}}/run-nowait"]["post"]
    run_body = run["requestBody"]["content"]["application/json"]["schema"]
    assert run_body["title"] == "RunRequest"
    assert {"start_event", "context", "handler_id", "kwargs"} <= set(run_body["properties"])
    send = paths[f"{PREFIX}/events/{{handler_id}}"]["post"]
    send_body = send["requestBody"]["content"]["application/json"]["schema"]
    assert send_body["title"] == "SendEventRequest"
    assert send_body["required"] == ["event"]
    handler_ref = {"$ref": "#/components/schemas/HandlerData"}
    for template in ("/workflows/{name}/run", "/workflows/{name}/run-nowait"):
        ok = paths[PREFIX + template]["post"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == handler_ref
    get = paths[f"{PREFIX}/handlers/{{handler_id}}"]["get"]["responses"]
    assert {"200", "202", "404", "500"} <= set(get)
    assert get["202"]["content"]["application/json"]["schema"] == handler_ref
    assert paths["/greetings"]["post"]["tags"] == ["greetings"]


async def test_response_models_leave_the_wire_bytes_alone(
    host_url: str, alice: httpx.AsyncClient
) -> None:
    async with user_http(host_url, None) as http:
        document = (await http.get("/openapi.json")).json()
    handler_schema = document["components"]["schemas"]["HandlerData"]
    assert list(handler_schema["properties"]) == HANDLER_KEYS

    response = await alice.post(
        "/workflows/report/run-nowait", json={"start_event": {"seconds": 60}}
    )
    assert list(response.json()) == HANDLER_KEYS  # nulls kept, not dropped by a response model
    assert response.content == compact(response.json())
    assert b'"result":null' in response.content
    assert b'"principal"' not in response.content  # bookkeeping stays internal
    listed = json.loads((await alice.get("/handlers")).content)["handlers"]
    assert [list(handler) for handler in listed] == [HANDLER_KEYS]
    assert listed[0]["handler_id"] == response.json()["handler_id"]
    await alice.post(f"/handlers/{response.json()['handler_id']}/cancel")

"""``api.handlers``: listing, reading, cancelling and retrying handlers.

Runs are started through the service directly: only this module's routes are served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llama_workflows_asgi.api import handlers
from llama_workflows_asgi.service import ServiceConfig
from tests.support.http import HANDLER_KEYS
from tests.support.routes import Edge, header_user, routes_of, run_workflows, sqlite_store

memory_only = pytest.mark.parametrize("edge", ["memory"], indirect=True)
"""For checks of parameter parsing that no store takes part in."""


@pytest.fixture(params=["memory", "sqlite"])
async def edge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Edge]:
    served = run_workflows()
    store = await sqlite_store(tmp_path) if request.param == "sqlite" else None
    config = ServiceConfig(max_page_size=3)
    async with routes_of(
        handlers, workflows=served, store=store, principal=header_user, config=config
    ) as e:
        yield e


async def finished(edge: Edge, workflow: str, handler_id: str, **fields: Any) -> None:
    start = edge.service.registry.get(workflow).workflow.start_event_class(**fields)
    await edge.service.run(workflow, start, handler_id=handler_id, principal="ada")


async def running(edge: Edge, handler_id: str) -> None:
    start = edge.service.registry.get("slow").workflow.start_event_class(seconds=60)
    await edge.service.start_run("slow", start, handler_id=handler_id, principal="ada")


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["handler_id"] for h in response.json()["handlers"]]


async def test_the_status_code_says_the_handlers_state(edge: Edge) -> None:
    await finished(edge, "greet", "done", name="Ada")
    await finished(edge, "fail", "broken")
    await running(edge, "live")
    done = await edge.http.get("/handlers/done")
    assert done.status_code == 200
    assert list(done.json()) == HANDLER_KEYS
    assert done.json()["result"]["value"] == {"result": {"greeting": "Hello, Ada!"}}
    assert (await edge.http.get("/handlers/live")).status_code == 202
    broken = await edge.http.get("/handlers/broken")
    assert (broken.status_code, broken.json()["error"]) == (500, "kaboom")


async def test_results_unwrap_the_stop_event(edge: Edge) -> None:
    await finished(edge, "greet", "plain", name="Ada")
    await finished(edge, "custom", "custom", topic="cats", count=2)
    plain = await edge.http.get("/results/plain")
    assert (plain.status_code, plain.json()["result"]) == (200, {"greeting": "Hello, Ada!"})
    assert list(plain.json()) == HANDLER_KEYS
    custom = (await edge.http.get("/results/custom")).json()
    assert custom["result"] == {"answer": 84, "topic": "cats"}
    await running(edge, "live")
    live = await edge.http.get("/results/live")
    assert (live.status_code, live.json()["result"]) == (202, None)


async def test_listing_filters_orders_and_pages(edge: Edge) -> None:
    for handler_id in ("h0", "h1", "h2", "h3"):
        await finished(edge, "greet", handler_id)
    await finished(edge, "fail", "h4")
    await running(edge, "h5")
    first = await edge.http.get("/handlers")
    assert ids(first) == ["h0", "h1", "h2"]  # max_page_size is 3
    assert list(first.json()) == ["handlers", "next_cursor"]
    second = await edge.http.get("/handlers", params={"cursor": first.json()["next_cursor"]})
    assert (ids(second), second.json()["next_cursor"]) == (["h3", "h4", "h5"], None)
    newest = await edge.http.get("/handlers", params={"order": "desc", "limit": "2"})
    assert ids(newest) == ["h5", "h4"]
    failed_or_live = {"status": ["failed", "running"]}
    assert ids(await edge.http.get("/handlers", params=failed_or_live)) == ["h4", "h5"]
    assert ids(await edge.http.get("/handlers", params={"workflow_name": "slow"})) == ["h5"]
    assert ids(await edge.http.get("/handlers", params={"handler_id": ["h1", "h3"]})) == [
        "h1",
        "h3",
    ]
    # The client sends empty values for "no filter".
    empty = await edge.http.get("/handlers", params={"status": "", "workflow_name": ""})
    assert ids(empty) == ["h0", "h1", "h2"]


async def test_a_listing_shows_only_the_callers_handlers(edge: Edge) -> None:
    await finished(edge, "greet", "adas")
    response = await edge.http.get("/handlers", headers={"x-user": "bob"})
    assert response.json() == {"handlers": [], "next_cursor": None}
    assert (await edge.http.get("/handlers/adas", headers={"x-user": "bob"})).status_code == 404


@memory_only
@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"status": "lost"}, "Invalid status: 'lost'"),
        ({"cursor": "not-a-cursor"}, "Invalid cursor: 'not-a-cursor'"),
        ({"order": "sideways"}, "order: "),
        ({"limit": "0"}, "limit: "),
        ({"limit": "4"}, "limit: "),
        ({"cursor": "x" * 1025}, "cursor: "),
    ],
    ids=["status", "cursor", "order", "limit-low", "limit-high", "cursor-long"],
)
async def test_bad_listing_parameters_are_400(
    edge: Edge, params: dict[str, str], detail: str
) -> None:
    response = await edge.http.get("/handlers", params=params)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


async def test_cancel_a_running_handler_then_conflict(edge: Edge) -> None:
    await running(edge, "live")
    response = await edge.http.post("/handlers/live/cancel")
    assert (response.status_code, response.json()) == (200, {"status": "cancelled"})
    assert (await edge.http.get("/handlers/live")).json()["status"] == "cancelled"
    again = await edge.http.post("/handlers/live/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": "Handler 'live' is already cancelled"}


async def test_purge_deletes_a_finished_handler(edge: Edge) -> None:
    await finished(edge, "greet", "old")
    response = await edge.http.post("/handlers/old/cancel", params={"purge": "true"})
    assert (response.status_code, response.json()) == (200, {"status": "deleted"})
    assert (await edge.http.get("/handlers/old")).status_code == 404
    assert (
        await edge.http.post("/handlers/old/cancel", params={"purge": "true"})
    ).status_code == 404


@memory_only
async def test_a_bad_purge_flag_is_400(edge: Edge) -> None:
    await running(edge, "live")
    response = await edge.http.post("/handlers/live/cancel", params={"purge": "maybe"})
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid purge: 'maybe' (expected true or false)"
    assert (await edge.http.get("/handlers/live")).json()["status"] == "running"


async def test_retry_reopens_only_a_failed_handler(edge: Edge) -> None:
    await finished(edge, "fail", "broken")
    await finished(edge, "greet", "fine")
    retried = await edge.http.post("/handlers/broken/retry")
    assert retried.status_code == 200
    assert list(retried.json()) == HANDLER_KEYS
    assert (retried.json()["status"], retried.json()["error"]) == ("running", None)
    refused = await edge.http.post("/handlers/fine/retry")
    assert refused.status_code == 409
    assert "failed" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/handlers/nope"),
        ("GET", "/results/nope"),
        ("POST", "/handlers/nope/cancel"),
        ("POST", "/handlers/nope/retry"),
    ],
)
@memory_only
async def test_unknown_handler_is_404(edge: Edge, method: str, path: str) -> None:
    response = await edge.http.request(method, path)
    assert (response.status_code, response.json()) == (404, {"detail": "Handler 'nope' not found"})


@memory_only
async def test_only_the_handler_routes_are_added(edge: Edge) -> None:
    paths = edge.app.openapi()["paths"]
    assert {path: sorted(methods) for path, methods in paths.items()} == {
        "/handlers": ["get"],
        "/handlers/{handler_id}": ["get"],
        "/results/{handler_id}": ["get"],
        "/handlers/{handler_id}/cancel": ["post"],
        "/handlers/{handler_id}/retry": ["post"],
    }
    assert paths["/results/{handler_id}"]["get"]["deprecated"] is True
    assert {"200", "202", "500", "404"} <= set(paths["/handlers/{handler_id}"]["get"]["responses"])

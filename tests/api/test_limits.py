"""Bounded, round-trippable input: nesting depth, non-JSON numbers, events in JSON strings.

A body is refused with a 400 naming the problem before anything is written;
what is accepted is known to checkpoint and decode back.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llama_workflows_asgi import ServiceConfig, WorkflowServer
from tests.support.http import wait_until_finished
from tests.support.servers import serving
from tests.support.workflows import make_workflows, nested_list

memory_only = pytest.mark.parametrize("store_kind", ["memory"], indirect=True)


def deep_start(depth: int) -> dict[str, Any]:
    """A run request whose body nests ``depth`` levels ({"start_event": {"name": [...]}})."""
    return {"start_event": {"name": nested_list(depth - 2)}}


async def handler_ids(http: httpx.AsyncClient) -> list[str]:
    return [h["handler_id"] for h in (await http.get("/handlers")).json()["handlers"]]


@memory_only
@pytest.mark.parametrize("route", ["run", "run-nowait"])
async def test_a_body_nested_past_the_limit_is_a_400_naming_it(
    http: httpx.AsyncClient, route: str
) -> None:
    response = await http.post(f"/workflows/greet/{route}", json=deep_start(65))
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "limit of 64 levels" in detail
    assert "max_json_depth" in detail
    assert await handler_ids(http) == []


@memory_only
async def test_a_body_deeper_than_python_can_parse_is_a_400(http: httpx.AsyncClient) -> None:
    body = '{"start_event": {"name": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    response = await http.post("/workflows/greet/run-nowait", content=body)
    assert response.status_code == 400
    assert "limit of 64 levels" in response.json()["detail"]


@memory_only
@pytest.mark.parametrize(
    ("literal", "detail"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("1e400", "the number 1e400 is too large"),
        ('"\\udc00"', "unpaired UTF-16 surrogate"),
    ],
)
async def test_what_json_cannot_carry_is_a_400(
    http: httpx.AsyncClient, literal: str, detail: str
) -> None:
    body = '{"start_event": {"name": ' + literal + "}}"
    response = await http.post("/workflows/greet/run-nowait", content=body)
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert await handler_ids(http) == []


@memory_only
async def test_sent_events_get_the_same_limits(http: httpx.AsyncClient) -> None:
    handler_id = (await http.post("/workflows/hitl/run-nowait", json={})).json()["handler_id"]
    answer = {"type": "AnswerEvent", "value": {"answer": "x"}}
    deep = {"event": {**answer, "value": {"answer": "x", "extra": nested_list(70)}}}
    nan = '{"event": {"type": "AnswerEvent", "value": {"answer": "x", "extra": NaN}}}'
    inner = json.dumps({**answer, "value": {"answer": "x", "extra": nested_list(70)}})

    refused = [
        await http.post(f"/events/{handler_id}", json=deep),
        await http.post(f"/events/{handler_id}", content=nan),
        await http.post(f"/events/{handler_id}", json={"event": inner}),  # a JSON string
    ]
    sent = await http.post(f"/events/{handler_id}", json={"event": answer})
    done = await wait_until_finished(http, handler_id)

    assert [r.status_code for r in refused] == [400, 400, 400]
    assert "limit of 64 levels" in refused[0].json()["detail"]
    assert "NaN" in refused[1].json()["detail"]
    assert "limit of 64 levels" in refused[2].json()["detail"]
    assert sent.status_code == 200
    assert done.json()["result"]["value"] == {"result": "got x"}


async def test_input_at_the_limit_is_accepted_and_kept_whole(http: httpx.AsyncClient) -> None:
    body = deep_start(64)
    response = await http.post("/workflows/greet/run", json=body)
    assert response.status_code == 200
    assert response.json()["result"]["value"]["result"] == {
        "greeting": f"Hello, {body['start_event']['name']}!"
    }


async def test_the_limit_is_configurable() -> None:
    server = WorkflowServer(config=ServiceConfig(max_json_depth=8))
    server.add_workflow("greet", make_workflows()["greet"])
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url) as http:
        fits = await http.post("/workflows/greet/run", json=deep_start(8))
        deeper = await http.post("/workflows/greet/run", json=deep_start(9))
    assert fits.status_code == 200
    assert deeper.status_code == 400
    assert "limit of 8 levels" in deeper.json()["detail"]


def test_a_limit_the_engine_could_not_checkpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="max_json_depth"):
        ServiceConfig(max_json_depth=250)

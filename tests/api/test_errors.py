"""Bad input on every route: the documented 4xx, a string ``detail`` naming the problem,
and nothing written for a refused request (checked through ``GET /handlers`` and by
reading the store's tables directly).

Refusals are grouped in tables, one server per table, so every store runs them all.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from llama_workflows_asgi import WorkflowServer
from tests.support.http import run, start, wait_until_finished, wait_until_idle
from tests.support.rows import CountRows, RowCounts, row_counter
from tests.support.servers import serving
from tests.support.stores import StoreFactory
from tests.support.workflows import make_workflows

HELLO_WORLD = {"result": {"greeting": "Hello, World!"}}

memory_only = pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
"""For checks of request parsing that no store takes part in."""

_UNSET: Any = object()


@dataclass(frozen=True)
class Bad:
    """One request that must be refused with ``status`` and a detail containing ``detail``."""

    method: str
    path: str
    status: int
    detail: str
    json: Any = _UNSET
    content: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        sent = self.content if self.json is _UNSET else self.json
        return f"{self.method} {self.path} {self.params or ''} {sent!r}"


async def listed_ids(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/handlers")
    assert response.status_code == 200
    return [h["handler_id"] for h in response.json()["handlers"]]


async def send(http: httpx.AsyncClient, bad: Bad) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": bad.params, "headers": bad.headers}
    if bad.json is not _UNSET:
        kwargs["json"] = bad.json
    elif bad.content is not None:
        kwargs["content"] = bad.content
    return await http.request(bad.method, bad.path, **kwargs)


def assert_detail(response: httpx.Response, status: int, detail: str, what: object) -> str:
    assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/json", what
    body = response.json()
    assert list(body) == ["detail"], f"{what}: {body}"
    assert isinstance(body["detail"], str), f"{what}: {body}"
    assert detail in body["detail"], f"{what}: {body['detail']!r} lacks {detail!r}"
    return str(body["detail"])


async def assert_refused(http: httpx.AsyncClient, rows: CountRows, cases: list[Bad]) -> None:
    """Send every case; each must be refused and leave the store exactly as it was."""
    for bad in cases:
        rows_before, listed_before = await rows(), await listed_ids(http)
        assert_detail(await send(http, bad), bad.status, bad.detail, bad)
        assert await rows() == rows_before, f"{bad}: the store changed"
        assert await listed_ids(http) == listed_before, f"{bad}: a handler appeared"


async def waiting_hitl(http: httpx.AsyncClient) -> str:
    """A hitl run waiting for its answer, with everything it wrote so far on disk."""
    handler_id = await start(http, "hitl")
    await wait_until_idle(http, handler_id)
    return handler_id


async def finish_hitl(http: httpx.AsyncClient, handler_id: str, answer: str) -> dict[str, Any]:
    event = {"event": {"type": "AnswerEvent", "value": {"answer": answer}}}
    sent = await http.post(f"/events/{handler_id}", json=event)
    assert sent.status_code == 200, sent.text
    done = await wait_until_finished(http, handler_id)
    assert done.status_code == 200
    result: dict[str, Any] = done.json()
    return result


# -- bodies --------------------------------------------------------------------------------

UNREADABLE = [
    (b"", "Invalid JSON body: Expecting value"),
    (b"{bad", "Invalid JSON body: Expecting property name"),
    (b'{"start_event": ', "Invalid JSON body"),
    (b"\xff\xfe\x00", "Invalid JSON body"),
    (b"[]", "Request body must be a JSON object"),
    (b'[{"start_event": {}}]', "Request body must be a JSON object"),
    (b'"text"', "Request body must be a JSON object"),
    (b"1", "Request body must be a JSON object"),
    (b"null", "Request body must be a JSON object"),
    (b"true", "Request body must be a JSON object"),
]


async def test_unreadable_bodies_are_refused_on_every_post_route(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    hitl = await waiting_hitl(http)
    paths = ["/workflows/greet/run-nowait", "/workflows/greet/run", f"/events/{hitl}"]
    await assert_refused(
        http,
        stored_rows,
        [
            Bad(
                "POST",
                path,
                400,
                detail,
                content=body,
                headers={"content-type": "application/json"},
            )
            for path in paths
            for body, detail in UNREADABLE
        ],
    )
    assert (await finish_hitl(http, hitl, "still fine"))["result"]["value"] == {
        "result": "got still fine"
    }


# -- start events and run fields -------------------------------------------------------------

_RUN_PATHS = ["/workflows/{}/run-nowait", "/workflows/{}/run"]


def run_cases(workflow: str, body: Any, detail: str, status: int = 400) -> list[Bad]:
    """The same refused body sent to both run routes of ``workflow``."""
    return [Bad("POST", path.format(workflow), status, detail, json=body) for path in _RUN_PATHS]


async def test_refused_start_events_write_no_handler(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    cases = [
        # The reference wrote an orphan "running" row here and answered 500.
        *run_cases("custom", {"start_event": None}, "topic: Field required"),
        *run_cases("custom", {}, "topic: Field required"),
        *run_cases("custom", {"kwargs": {"count": 2}}, "topic: Field required"),
        *run_cases("custom", {"start_event": {"topic": "t", "count": "x"}}, "count"),
        *run_cases("custom", {"start_event": {"type": "MyStop", "value": {}}}, "MyStop"),
        *run_cases("custom", {"start_event": {"type": "StopEvent", "value": {}}}, "StopEvent"),
        *run_cases(
            "greet", {"start_event": {"type": "Nope", "value": {}}}, "Invalid event type: Nope"
        ),
        *run_cases("greet", {"start_event": {"qualified_name": "os.system"}}, "os.system"),
        *run_cases(
            "greet",
            {"start_event": {"qualified_name": "workflows.events.StepStateChanged", "value": {}}},
            "workflows.events.StepStateChanged is not declared",
        ),
        *run_cases(
            "greet",
            {"start_event": {"qualified_name": "subprocess.Popen", "value": {}}},
            "subprocess.Popen is not declared",
        ),
        *run_cases("greet", {"start_event": "not json"}, "not valid JSON"),
        *run_cases("greet", {"start_event": "[1, 2]"}, "JSON object"),
        *run_cases("greet", {"start_event": 5}, "JSON object"),
        *run_cases("greet", {"start_event": [{"name": "x"}]}, "JSON object"),
        *run_cases("greet", {"start_event": {"type": 5, "value": {}}}, "'type' must be a string"),
        *run_cases(
            "greet", {"start_event": {"type": "StartEvent", "value": [1]}}, "'value' must be"
        ),
    ]
    await assert_refused(http, stored_rows, cases)
    assert await listed_ids(http) == []


async def test_refused_run_fields_write_no_handler(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    bad_ids: list[Any] = [5, 1.5, True, [], {"id": "x"}, "", "a/b", "tab\there", "x" * 256]
    cases = [
        *(
            case
            for value in bad_ids
            for case in run_cases("greet", {"handler_id": value}, "handler_id")
        ),
        *(
            case
            for value in ["abc", [], 5, True]
            for case in run_cases("greet", {"context": value}, "Invalid context")
        ),
        *run_cases("greet", {"context": {"state": {}}}, "Context API is disabled"),
        *run_cases("greet", {"context": {"is_running": True}}, "Context API is disabled"),
    ]
    await assert_refused(http, stored_rows, cases)
    assert await listed_ids(http) == []


async def test_empty_context_and_longest_handler_id_are_accepted(http: httpx.AsyncClient) -> None:
    longest = "x" * 255
    for body in ({"context": {}}, {"context": None}, {"handler_id": longest}):
        response = await http.post("/workflows/greet/run", json=body)
        assert response.status_code == 200, f"{body}: {response.text}"
    assert longest in await listed_ids(http)


@pytest.fixture
async def context_api_url(make_store: StoreFactory) -> AsyncIterator[str]:
    """A server accepting the context API (``ServiceConfig(accept_context_api=True)``)."""
    from llama_workflows_asgi import ServiceConfig

    server = WorkflowServer(make_store(), config=ServiceConfig(accept_context_api=True))
    server.add_workflow("greet", make_workflows()["greet"])
    async with serving(server.app) as url:
        yield url


@memory_only
async def test_enabled_context_api_still_refuses_an_unloadable_context(
    context_api_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=context_api_url) as http:
        refused = await http.post(
            "/workflows/greet/run", json={"context": {"is_running": True, "version": 99}}
        )
        assert_detail(refused, 400, "Invalid context", "version 99 context")
        assert await listed_ids(http) == []
        accepted = await http.post("/workflows/greet/run", json={"context": {"state": {}}})
        assert accepted.status_code == 200, accepted.text


# -- sending events ------------------------------------------------------------------------


async def test_refused_events_leave_the_run_untouched(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    hitl = await waiting_hitl(http)
    path = f"/events/{hitl}"
    answer = {"type": "AnswerEvent", "value": {"answer": "x"}}
    cases = [
        Bad("POST", path, 400, "Event data is required", json={}),
        Bad("POST", path, 400, "Event data is required", json={"step": "done"}),
        *(
            Bad("POST", path, 400, "Event data is required", json={"event": empty})
            for empty in (None, {}, "", [], 0, False)
        ),
        Bad("POST", path, 400, "JSON object", json={"event": 5}),
        Bad("POST", path, 400, "JSON object", json={"event": [answer]}),
        Bad("POST", path, 400, "not valid JSON", json={"event": "nope"}),
        Bad("POST", path, 400, "type", json={"event": {"value": {"answer": "x"}}}),
        Bad("POST", path, 400, "type", json={"event": {"answer": "x"}}),
        Bad("POST", path, 400, "Invalid event type: Nope", json={"event": {"type": "Nope"}}),
        Bad("POST", path, 400, "Invalid event type: MyStart", json={"event": {"type": "MyStart"}}),
        Bad("POST", path, 400, "os.system", json={"event": {"qualified_name": "os.system"}}),
        Bad(
            "POST",
            path,
            400,
            "subprocess.Popen is not declared",
            json={"event": {"qualified_name": "subprocess.Popen", "value": {}}},
        ),
        Bad(
            "POST",
            path,
            400,
            "answer",
            json={"event": {"type": "AnswerEvent", "value": {"answer": 5}}},
        ),
        Bad("POST", path, 400, "answer", json={"event": {"type": "AnswerEvent", "value": {}}}),
        Bad(
            "POST",
            path,
            400,
            "'value' must be",
            json={"event": {"type": "AnswerEvent", "value": 1}},
        ),
        *(
            Bad("POST", path, 400, "Invalid step", json={"event": answer, "step": step})
            for step in (5, [], {"name": "done"}, True)
        ),
        Bad("POST", path, 400, "nonexistent", json={"event": answer, "step": "nonexistent"}),
        Bad("POST", path, 400, "cannot be sent", json={"event": {"type": "StopEvent"}}),
        Bad("POST", path, 400, "already started", json={"event": {"type": "StartEvent"}}),
    ]
    await assert_refused(http, stored_rows, cases)
    still_waiting = await http.get(f"/handlers/{hitl}")
    assert still_waiting.status_code == 202
    assert (await finish_hitl(http, hitl, "late"))["result"]["value"] == {"result": "got late"}


async def test_event_for_a_named_step_is_delivered(http: httpx.AsyncClient) -> None:
    hitl = await waiting_hitl(http)
    event = {"event": {"type": "AnswerEvent", "value": {"answer": "S"}}, "step": "done"}
    assert (await http.post(f"/events/{hitl}", json=event)).status_code == 200
    assert (await wait_until_finished(http, hitl)).json()["result"]["value"] == {"result": "got S"}


EVIL = "evil_module_xyz"


@pytest.fixture
def importable_evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real module on ``sys.path`` that the server must never import."""
    (tmp_path / f"{EVIL}.py").write_text(
        "from workflows.events import Event, StartEvent\n"
        "class Payload(Event):\n    x: int = 0\n"
        "class EvilStart(StartEvent):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, EVIL, raising=False)
    assert importlib.util.find_spec(EVIL) is not None  # an import attempt would succeed
    return EVIL


@memory_only
async def test_qualified_names_are_resolved_without_importing(
    http: httpx.AsyncClient, stored_rows: CountRows, importable_evil_module: str
) -> None:
    hitl = await waiting_hitl(http)
    names = [f"{importable_evil_module}.Payload", f"{importable_evil_module}.EvilStart"]
    cases = [
        *(
            case
            for name in names
            for case in run_cases(
                "greet", {"start_event": {"qualified_name": name, "value": {}}}, name
            )
        ),
        *(
            Bad("POST", f"/events/{hitl}", 400, name, json={"event": {"qualified_name": name}})
            for name in names
        ),
        Bad(
            "POST",
            f"/events/{hitl}",
            400,
            "Invalid event type",
            json={"event": {"type": names[0], "value": {}}},
        ),
    ]
    await assert_refused(http, stored_rows, cases)
    assert importable_evil_module not in sys.modules


# -- oversize bodies -------------------------------------------------------------------------

LIMIT = 512


@dataclass
class SmallLimitServer:
    http: httpx.AsyncClient
    rows: CountRows


@pytest.fixture
async def small_limit(
    make_store: StoreFactory, database_url: str | None
) -> AsyncIterator[SmallLimitServer]:
    """A server with ``max_body_size=512`` and the test workflows."""
    server = WorkflowServer(make_store(), max_body_size=LIMIT)
    for name, workflow in make_workflows().items():
        server.add_workflow(name, workflow)
    async with (
        serving(server.app) as url,
        httpx.AsyncClient(base_url=url) as http,
        row_counter(server.store, database_url) as rows,
    ):
        yield SmallLimitServer(http, rows)


def body_of_size(size: int) -> bytes:
    """A valid run body of exactly ``size`` bytes."""
    prefix, suffix = b'{"start_event":{"name":"', b'"}}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


async def in_chunks(body: bytes) -> AsyncIterator[bytes]:
    """``body`` sent chunked, without a Content-Length."""
    for start_at in range(0, len(body), 100):
        yield body[start_at : start_at + 100]


@memory_only
async def test_oversize_bodies_are_413(small_limit: SmallLimitServer) -> None:
    http, rows = small_limit.http, small_limit.rows
    hitl = await waiting_hitl(http)
    too_big = body_of_size(LIMIT + 1)
    answer = {"event": {"type": "AnswerEvent", "value": {"answer": "y" * LIMIT}}}
    detail = f"{LIMIT}-byte limit"
    await assert_refused(
        http,
        rows,
        [
            Bad("POST", "/workflows/greet/run-nowait", 413, detail, content=too_big),
            Bad("POST", "/workflows/greet/run", 413, detail, content=too_big),
            Bad("POST", f"/events/{hitl}", 413, detail, json=answer),
        ],
    )
    before = await rows()
    for path in ("/workflows/greet/run-nowait", "/workflows/greet/run"):
        chunked = await http.post(path, content=in_chunks(too_big))
        assert "content-length" not in chunked.request.headers
        assert_detail(chunked, 413, detail, f"chunked {path}")
    assert await rows() == before
    assert await listed_ids(http) == [hitl]

    at_limit = await http.post("/workflows/greet/run", content=body_of_size(LIMIT))
    assert at_limit.status_code == 200, at_limit.text
    chunked_at_limit = await http.post(
        "/workflows/greet/run", content=in_chunks(body_of_size(LIMIT))
    )
    assert chunked_at_limit.status_code == 200, chunked_at_limit.text


# -- unknown workflows and handlers ---------------------------------------------------------


async def test_unknown_workflow_is_404_on_every_workflow_route(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    detail = "Workflow 'nope' not found"
    cases = [
        Bad("POST", "/workflows/nope/run", 404, detail, json={}),
        Bad("POST", "/workflows/nope/run-nowait", 404, detail, json={"start_event": {}}),
        # The workflow is looked up before the body is read.
        Bad("POST", "/workflows/nope/run-nowait", 404, detail, content=b"{bad"),
        Bad("GET", "/workflows/nope/schema", 404, detail),
        Bad("GET", "/workflows/nope/events", 404, detail),
        Bad("GET", "/workflows/nope/representation", 404, detail),
    ]
    await assert_refused(http, stored_rows, cases)


async def test_unknown_handler_is_404_on_every_handler_route(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    await run(http, "greet", {"handler_id": "known"})
    detail = "Handler 'nope' not found"
    event = {"event": {"type": "StartEvent", "value": {}}}
    cases = [
        Bad("GET", "/handlers/nope", 404, detail),
        Bad("GET", "/results/nope", 404, detail),
        Bad("GET", "/events/nope", 404, detail),
        Bad("GET", "/events/nope", 404, detail, params={"sse": "false", "after_sequence": "-1"}),
        Bad("POST", "/events/nope", 404, detail, json=event),
        Bad("POST", "/handlers/nope/cancel", 404, detail),
        Bad("POST", "/handlers/nope/cancel", 404, detail, params={"purge": "true"}),
    ]
    await assert_refused(http, stored_rows, cases)


# -- query parameters ------------------------------------------------------------------------


async def test_invalid_query_parameters_are_400(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    done = (await run(http, "greet"))["handler_id"]
    naive_cursor = "WyIyMDI0LTAxLTAxVDAwOjAwOjAwIiwieCJd"  # ["2024-01-01T00:00:00","x"]
    listing = [
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": str(10**30)}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"cursor": "zzz"}, "Invalid cursor"),
        ({"cursor": "!!!"}, "Invalid cursor"),
        ({"cursor": naive_cursor}, "Invalid cursor"),
        ({"order": "sideways"}, "order"),
        ({"status": "bogus"}, "Invalid status: 'bogus'"),
        ({"status": "Completed"}, "Invalid status"),
    ]
    stream = [
        ({"after_sequence": "abc"}, "Invalid after_sequence: 'abc'"),
        ({"after_sequence": "-5"}, "Invalid after_sequence: '-5'"),
        ({"after_sequence": "1.5"}, "Invalid after_sequence"),
        ({"sse": "maybe"}, "Invalid sse: 'maybe'"),
        ({"include_internal": "2"}, "Invalid include_internal"),
        ({"include_qualified_name": "yes", "after_sequence": "-1"}, "include_qualified_name"),
    ]
    cases = [
        *(Bad("GET", "/handlers", 400, detail, params=params) for params, detail in listing),
        *(Bad("GET", f"/events/{done}", 400, detail, params=params) for params, detail in stream),
        Bad("POST", f"/handlers/{done}/cancel", 400, "Invalid purge", params={"purge": "yes"}),
    ]
    await assert_refused(http, stored_rows, cases)
    assert (await http.get("/handlers", params={"limit": "1000"})).status_code == 200


@memory_only
async def test_stream_flags_are_validated_even_when_nothing_is_left(
    http: httpx.AsyncClient,
) -> None:
    done = (await run(http, "greet"))["handler_id"]
    for params in ({"include_internal": "2"}, {"include_qualified_name": "yes"}):
        response = await http.get(f"/events/{done}", params=params)  # the cursor is "now"
        assert_detail(response, 400, f"Invalid {next(iter(params))}", params)


# -- conflicts with the handler's state ------------------------------------------------------


async def test_cancelling_a_finished_handler_conflicts(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    slow = await start(http, "slow", {"start_event": {"seconds": 30}})
    assert (await http.post(f"/handlers/{slow}/cancel")).json() == {"status": "cancelled"}
    done = (await run(http, "greet"))["handler_id"]
    await assert_refused(
        http,
        stored_rows,
        [
            Bad("POST", f"/handlers/{slow}/cancel", 409, "already cancelled"),
            Bad(
                "POST",
                f"/handlers/{slow}/cancel",
                409,
                "already cancelled",
                params={"purge": "false"},
            ),
            Bad("POST", f"/handlers/{done}/cancel", 409, "already completed"),
        ],
    )


async def test_sending_to_a_finished_handler_conflicts(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    done = await waiting_hitl(http)
    await finish_hitl(http, done, "first")
    cancelled = await waiting_hitl(http)
    assert (await http.post(f"/handlers/{cancelled}/cancel")).status_code == 200
    event = {"event": {"type": "AnswerEvent", "value": {"answer": "again"}}}
    await assert_refused(
        http,
        stored_rows,
        [
            Bad("POST", f"/events/{done}", 409, "Workflow already completed", json=event),
            Bad("POST", f"/events/{cancelled}", 409, "Workflow already completed", json=event),
        ],
    )


async def test_purging_twice_is_404(http: httpx.AsyncClient, stored_rows: CountRows) -> None:
    done = (await run(http, "greet"))["handler_id"]
    purged = await http.post(f"/handlers/{done}/cancel", params={"purge": "TRUE"})
    assert (purged.status_code, purged.json()) == (200, {"status": "deleted"})
    assert await stored_rows() == RowCounts(handlers=0, events=0, inbox=0)
    await assert_refused(
        http,
        stored_rows,
        [
            Bad(
                "POST",
                f"/handlers/{done}/cancel",
                404,
                f"Handler '{done}' not found",
                params={"purge": "1"},
            )
        ],
    )


async def test_reusing_a_handler_id_conflicts_while_running_or_across_workflows(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    running = await start(http, "slow", {"start_event": {"seconds": 30}, "handler_id": "busy"})
    finished = (await run(http, "greet", {"handler_id": "greeted"}))["handler_id"]
    await assert_refused(
        http,
        stored_rows,
        [
            *run_cases("slow", {"handler_id": running}, "Handler 'busy' is already running", 409),
            *run_cases("greet", {"handler_id": running}, "Handler 'busy' is already running", 409),
            *run_cases("counter", {"handler_id": finished}, "'greeted' is already in use", 409),
        ],
    )
    assert (await http.post(f"/handlers/{running}/cancel")).status_code == 200


async def test_concurrent_starts_with_one_handler_id_start_one_run(
    http: httpx.AsyncClient,
) -> None:
    body = {"handler_id": "contested", "start_event": {"seconds": 30}}
    fresh = await asyncio.gather(
        *(http.post("/workflows/slow/run-nowait", json=body) for _ in range(6))
    )
    assert sorted(r.status_code for r in fresh) == [200] + [409] * 5
    await http.post("/handlers/contested/cancel")

    # The same race on a finished handler id: only one restart may win.
    restarted = await asyncio.gather(
        *(http.post("/workflows/slow/run-nowait", json=body) for _ in range(6))
    )
    assert sorted(r.status_code for r in restarted) == [200] + [409] * 5
    assert await listed_ids(http) == ["contested"]
    await http.post("/handlers/contested/cancel")


@memory_only
async def test_handler_ids_no_url_can_address_are_refused(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    # "/handlers/.." is normalised to "/" by clients (httpx, browsers), so a handler
    # with such an id could never be read, streamed or cancelled again.
    cases = [
        case
        for hid in (".", "..")
        for case in run_cases("greet", {"handler_id": hid}, "handler_id")
    ]
    await assert_refused(http, stored_rows, cases)


# -- Idempotency-Key -------------------------------------------------------------------------


async def test_idempotency_key_replays_the_same_handler(http: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "order-1"}
    body = {"start_event": {"name": "Ada"}}
    first = await http.post("/workflows/greet/run-nowait", json=body, headers=headers)
    again = await http.post("/workflows/greet/run-nowait", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["handler_id"] == first.json()["handler_id"]
    assert await listed_ids(http) == [first.json()["handler_id"]]

    waited = await http.post("/workflows/greet/run", json=body, headers={"Idempotency-Key": "o-2"})
    replayed = await http.post(
        "/workflows/greet/run", json=body, headers={"Idempotency-Key": "o-2"}
    )
    assert replayed.status_code == 200
    assert replayed.json() == waited.json()
    assert len(await listed_ids(http)) == 2


async def test_idempotency_key_with_another_request_conflicts(
    http: httpx.AsyncClient, stored_rows: CountRows
) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await http.post(
        "/workflows/greet/run-nowait", json={"start_event": {"name": "Ada"}}, headers=headers
    )
    assert first.status_code == 200
    await wait_until_finished(http, first.json()["handler_id"])
    detail = "Idempotency-Key"
    await assert_refused(
        http,
        stored_rows,
        [
            Bad(
                "POST",
                "/workflows/greet/run-nowait",
                409,
                detail,
                json={"start_event": {"name": "Bob"}},
                headers=headers,
            ),
            Bad("POST", "/workflows/greet/run", 409, detail, json={}, headers=headers),
            Bad(
                "POST",
                "/workflows/counter/run-nowait",
                409,
                detail,
                json={"start_event": {"name": "Ada"}},
                headers=headers,
            ),
            Bad(
                "POST",
                "/workflows/greet/run-nowait",
                400,
                "idempotency-key",
                json={},
                headers={"Idempotency-Key": "k" * 256},
            ),
        ],
    )


async def test_concurrent_requests_with_one_idempotency_key_start_one_run(
    http: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "burst"}
    body = {"start_event": {"name": "Burst"}}
    responses = await asyncio.gather(
        *(http.post("/workflows/greet/run-nowait", json=body, headers=headers) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert len({r.json()["handler_id"] for r in responses}) == 1
    assert len(await listed_ids(http)) == 1


@memory_only
async def test_edge_case_bodies_get_definite_answers(http: httpx.AsyncClient) -> None:
    odd_starts = [
        # An envelope naming no class means the workflow's start class.
        ("greet", {"value": {"name": 1}}, 200, {"result": {"greeting": "Hello, 1!"}}),
        ("greet", {"type": None, "qualified_name": None}, 200, HELLO_WORLD),
        ("custom", {"type": "MyStart", "value": {"topic": None}}, 400, "topic"),
        # Declared fields found under "_data" fill the start class's fields.
        ("custom", {"_data": {"topic": "t"}, "count": -1}, 200, {"answer": -42, "topic": "t"}),
    ]
    for workflow, start_event, status, expected in odd_starts:
        response = await http.post(f"/workflows/{workflow}/run", json={"start_event": start_event})
        if status == 200:
            assert response.status_code == 200, f"{start_event}: {response.text}"
            assert response.json()["result"]["value"] == expected
        else:
            assert_detail(response, status, str(expected), start_event)

    hitl = await waiting_hitl(http)
    stop = {"event": {"type": "StopEvent", "value": {"result": "from outside"}}}
    # A run's outcome is its own: a StopEvent from outside is refused, the run goes on.
    assert_detail(await http.post(f"/events/{hitl}", json=stop), 400, "StopEvent", stop)
    assert (await http.get(f"/handlers/{hitl}")).status_code == 202
    doubly_encoded = {"event": json.dumps(json.dumps({"type": "AnswerEvent"}))}
    assert_detail(await http.post(f"/events/{hitl}", json=doubly_encoded), 400, "JSON object", "")
    assert (await finish_hitl(http, hitl, "end"))["result"]["value"] == {"result": "got end"}

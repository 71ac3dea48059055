"""``_http``: JSON in and out, the error bodies, and the route class that answers every error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel

from llama_workflows_asgi import _http
from llama_workflows_asgi.errors import (
    BadEventError,
    ConflictError,
    HandlerNotFoundError,
    PayloadTooLargeError,
    RunQueueFullError,
    SchemaError,
    StoreUnavailableError,
    WorkflowNotFoundError,
    WorkflowServerError,
)


def test_json_responses_are_compact_and_keep_non_ascii() -> None:
    response = _http.json_response({"a": [1, 2], "name": "Zoë"}, 202)
    assert response.status_code == 202
    assert response.body == '{"a":[1,2],"name":"Zoë"}'.encode()
    assert response.headers["content-type"] == "application/json"


def test_error_responses_carry_a_detail_and_headers() -> None:
    response = _http.error_response(503, "later", {"Retry-After": "5"})
    assert (response.status_code, response.body) == (503, b'{"detail":"later"}')
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadEventError("bad event"), 400),
        (PayloadTooLargeError("too big"), 413),
        (WorkflowNotFoundError("w"), 404),
        (HandlerNotFoundError("h"), 404),
        (ConflictError("taken"), 409),
        (StoreUnavailableError("down", retry_after=7), 503),
        (RunQueueFullError("full", retry_after=2), 503),
    ],
)
def test_each_error_gets_its_status(error: WorkflowServerError, status: int) -> None:
    response = _http.response_for(error)
    assert response.status_code == status
    assert response.body == _http.json_response({"detail": str(error)}).body
    if isinstance(error, StoreUnavailableError):
        assert response.headers["retry-after"] == str(error.retry_after)
    else:
        assert "retry-after" not in response.headers


def test_an_error_without_a_status_leaks_nothing() -> None:
    response = _http.response_for(SchemaError("table workflow_handlers is missing"))
    assert (response.status_code, response.body) == (500, b'{"detail":"Internal server error"}')


class Body(BaseModel):
    n: int


router = APIRouter(route_class=_http.WorkflowRoute)


@router.get("/count")
async def count(n: int = Query(ge=1)) -> dict[str, int]:
    return {"n": n}


@router.get("/raises/{kind}")
async def raises(kind: str) -> None:
    if kind == "conflict":
        raise ConflictError("Handler 'h' is already running")
    if kind == "host":
        raise HTTPException(401, "who are you?", headers={"WWW-Authenticate": "Bearer"})
    raise RuntimeError("secret connection string")


@router.post("/body")
async def body(request: Request) -> Response:
    return _http.json_response(await _http.read_json_body(request, 32, max_depth=3))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://http") as client:
        yield client


async def test_validation_errors_are_400_with_a_one_line_detail(http: httpx.AsyncClient) -> None:
    assert (await http.get("/count", params={"n": "2"})).json() == {"n": 2}
    response = await http.get("/count", params={"n": "zero"})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid request: n: Input should be a valid integer, unable to parse string "
        "as an integer"
    }
    missing = await http.get("/count")
    assert missing.json() == {"detail": "Invalid request: n: Field required"}


async def test_package_errors_get_their_status(http: httpx.AsyncClient) -> None:
    response = await http.get("/raises/conflict")
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "Handler 'h' is already running"},
    )


async def test_the_hosts_own_errors_keep_their_answer(http: httpx.AsyncClient) -> None:
    response = await http.get("/raises/host")
    assert (response.status_code, response.json()) == (401, {"detail": "who are you?"})
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unexpected_errors_are_logged_and_a_bare_500(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="llama_workflows_asgi"):
        response = await http.get("/raises/bug")
    assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if r.name == "llama_workflows_asgi"]
    assert record.getMessage() == "unexpected error in GET /raises/bug"
    assert record.exc_info is not None


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b'{"a": [1]}', 200, None),
        (b"", 400, "Invalid JSON body: "),
        (b'{"a": NaN}', 400, "Invalid JSON body: "),
        (b'{"a": {"b": {"c": {}}}}', 400, "(max_json_depth)"),
        (b'{"a": "' + b"x" * 40 + b'"}', 413, "Request body exceeds the 32-byte limit"),
    ],
    ids=["object", "empty", "nan", "too-deep", "too-large"],
)
async def test_json_bodies_are_read_strictly_within_limits(
    http: httpx.AsyncClient, content: bytes, status: int, detail: str | None
) -> None:
    response = await http.post("/body", content=content)
    assert response.status_code == status, response.text
    if detail is None:
        assert response.json() == {"a": [1]}
    else:
        assert detail in response.json()["detail"]


async def test_a_streamed_body_is_cut_at_the_limit(http: httpx.AsyncClient) -> None:
    # No Content-Length: the limit is enforced while the chunks arrive.
    response = await http.post("/body", content=chunks(b'{"a": "', b"x" * 20, b"y" * 20, b'"}'))
    assert (response.status_code, response.json()) == (
        413,
        {"detail": "Request body exceeds the 32-byte limit"},
    )


class Inner(BaseModel):
    x: int


class Outer(BaseModel):
    inner: Inner
    many: list[Inner]


def test_inline_schema_resolves_every_reference() -> None:
    schema = _http.inline_schema(Outer)
    assert "$defs" not in schema
    assert schema["properties"]["inner"]["properties"] == {"x": {"title": "X", "type": "integer"}}
    assert schema["properties"]["many"]["items"]["title"] == "Inner"
    assert "$ref" not in str(schema)


def test_json_body_doc_documents_a_required_json_body() -> None:
    doc: dict[str, Any] = _http.json_body_doc(Inner)
    body = doc["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == _http.inline_schema(Inner)

"""``api.responses``: the answers each route documents besides its 200."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Response

from llama_workflows_asgi.api import responses
from llama_workflows_asgi.models import (
    ErrorResponse,
    EventEnvelopeWithMetadata,
    HandlerData,
    LegacyHandlerData,
)


def test_errors_are_documented_with_the_error_body() -> None:
    assert {404: {"model": ErrorResponse}} == responses.NOT_FOUND
    assert {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}} == responses.BAD_INPUT
    assert {409: {"model": ErrorResponse}} == responses.CONFLICT
    assert {503: {"model": ErrorResponse}} == responses.UNAVAILABLE


def test_a_handler_is_documented_under_each_code_of_its_state() -> None:
    assert responses.HANDLER_CODES[202]["model"] is HandlerData
    assert responses.HANDLER_CODES[500]["model"] is HandlerData
    assert responses.LEGACY_CODES[202]["model"] is LegacyHandlerData
    assert responses.LEGACY_CODES[500]["model"] is LegacyHandlerData
    for codes in (responses.HANDLER_CODES, responses.LEGACY_CODES):
        assert codes[404] == {"model": ErrorResponse}


def test_the_stream_documents_both_framings_and_the_empty_answer() -> None:
    content = responses.STREAM[200]["content"]
    assert content["text/event-stream"] == {"schema": {"type": "string"}}
    assert content["application/x-ndjson"]["schema"] == (
        EventEnvelopeWithMetadata.model_json_schema()
    )
    assert "no event is left" in responses.STREAM[204]["description"]
    assert {400, 404, 413} <= set(responses.STREAM)


def documented(codes: responses.Responses) -> dict[str, Any]:
    """What an OpenAPI document says of a route declaring ``codes``."""

    async def endpoint() -> Response:
        return Response()

    router = APIRouter()
    router.add_api_route("/x", endpoint, methods=["GET"], responses=codes)
    app = FastAPI()
    app.include_router(router)
    answers: dict[str, Any] = app.openapi()["paths"]["/x"]["get"]["responses"]
    return answers


def test_fastapi_turns_them_into_schema_references() -> None:
    answers = documented({**responses.NOT_FOUND, **responses.HANDLER_CODES})
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    assert answers["404"]["content"]["application/json"]["schema"] == error_ref
    assert answers["202"]["description"] == "Still running"
    handler_ref = {"$ref": "#/components/schemas/HandlerData"}
    assert answers["500"]["content"]["application/json"]["schema"] == handler_ref

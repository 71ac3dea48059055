"""HTTP plumbing shared by the routes: JSON in and out, and errors as status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import _json
from .errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    StoreUnavailableError,
    WorkflowServerError,
)

logger = logging.getLogger("llama_workflows_asgi")

_STATUS_BY_ERROR: tuple[tuple[type[WorkflowServerError], int], ...] = (
    (PayloadTooLargeError, 413),
    (BadRequestError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (StoreUnavailableError, 503),
)


def json_response(content: Any, status_code: int = 200) -> Response:
    """Compact JSON, exactly as the reference server writes it."""
    return Response(_json.dumps(content).encode(), status_code, media_type="application/json")


def error_response(
    status_code: int, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """The ``{"detail": "..."}`` body every error uses."""
    response = json_response({"detail": detail}, status_code)
    response.headers.update(headers or {})
    return response


def response_for(exc: WorkflowServerError) -> Response:
    """The HTTP answer to one of the package's errors."""
    for error_type, status_code in _STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            headers = None
            if isinstance(exc, StoreUnavailableError):
                headers = {"Retry-After": str(exc.retry_after)}
            return error_response(status_code, str(exc), headers)
    return error_response(500, "Internal server error")


def describe_request_error(exc: RequestValidationError) -> str:
    """A one-line description of FastAPI's parameter validation errors."""
    parts = []
    for error in exc.errors():
        location = ".".join(
            str(p) for p in error.get("loc", ()) if p not in ("query", "header", "path")
        )
        parts.append(f"{location or 'request'}: {error.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


class WorkflowRoute(APIRoute):
    """Route class that answers every error with ``{"detail": "<text>"}``.

    Parameter validation errors become 400 (not FastAPI's 422 with a list), the
    package's errors get their status (see ``errors``), and anything unexpected
    is logged and answered with a bare 500 that leaks no internals. It works
    inside any host app, without touching the host's exception handlers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return error_response(400, describe_request_error(exc))
            except StarletteHTTPException:
                raise  # the host's own errors (e.g. an auth dependency) keep their status
            except WorkflowServerError as exc:
                return response_for(exc)
            except Exception:
                logger.exception("unexpected error in %s %s", request.method, request.url.path)
                return error_response(500, "Internal server error")

        return route_handler


async def read_json_body(
    request: Request, limit: int, max_depth: int = _json.DEFAULT_MAX_JSON_DEPTH
) -> Any:
    """The request's JSON body; raises 413/400 errors for oversized or invalid bodies.

    Parsed strictly (see ``_json.loads``): nesting deeper than ``max_depth``,
    ``NaN``, ``Infinity`` and numbers too large for JSON are a 400.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"Request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    try:
        return _json.loads(b"".join(chunks), max_depth=max_depth)
    except _json.InvalidJSONError as exc:
        if "nested deeper" in str(exc):
            raise BadRequestError(f"Invalid JSON body: {exc} (max_json_depth)") from exc
        raise BadRequestError(f"Invalid JSON body: {exc}") from exc


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined, for ``openapi_extra`` bodies."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the route reads by hand."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(model)}},
        }
    }

"""``/handlers`` and ``/results``: listing, reading, cancelling and retrying runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from .._http import json_response
from ..models import CancelResponse, HandlerData, HandlersList, LegacyHandlerData
from . import params
from .deps import RouteContext, RouterBinding
from .responses import (
    BAD_INPUT,
    CONFLICT,
    HANDLER_CODES,
    LEGACY_CODES,
    NOT_FOUND,
    UNAVAILABLE,
    Responses,
)
from .wire import HANDLER_STATUS_CODE, handler_by_state, handler_json, legacy_result

Repeated = Annotated[list[str] | None, Query()]
_CANCEL_CODES: Responses = {**NOT_FOUND, **BAD_INPUT, **CONFLICT}
_RETRY_CODES: Responses = {**NOT_FOUND, **CONFLICT, **UNAVAILABLE}


async def list_handlers(
    route: RouteContext,
    status: Repeated = None,
    workflow_name: Repeated = None,
    handler_id: Repeated = None,
    version: Repeated = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: int | None = None,
) -> Response:
    """Handlers, oldest first (``order=desc`` for newest first), a page at a time.

    ``version`` keeps the runs started by those workflow versions (see
    ``add_workflow(..., version=...)``); the version itself is not part of the
    handler JSON, which keeps the reference server's shape.
    """
    # ``limit`` is checked by FastAPI against the router's ``max_page_size``
    # (``RouterBinding.page_limit``, given at registration).
    page = await route.service.list_page(
        statuses=params.status_filter(status),
        workflow_names=params.name_filter(workflow_name),
        handler_ids=params.name_filter(handler_id),
        versions=params.name_filter(version),
        descending=order == "desc",
        after=None if not cursor else params.decode_cursor(cursor),
        limit=limit,
        principal=route.principal,
    )
    next_cursor = None if page.next_cursor is None else params.encode_cursor(page.next_cursor)
    return json_response(
        {"handlers": [handler_json(h) for h in page.handlers], "next_cursor": next_cursor}
    )


async def get_handler(route: RouteContext, handler_id: str) -> Response:
    """The handler; 200 when completed, 202 while running, 500 if failed or cancelled."""
    return handler_by_state(await route.service.get(handler_id, principal=route.principal))


async def get_result(route: RouteContext, handler_id: str) -> Response:
    """Like ``GET /handlers/{id}`` with the result unwrapped to its value (legacy)."""
    handler = await route.service.get(handler_id, principal=route.principal)
    body = handler_json(handler)
    body["result"] = legacy_result(handler.result_envelope())
    return json_response(body, HANDLER_STATUS_CODE[handler.status])


async def cancel_handler(
    route: RouteContext, handler_id: str, purge: str | None = None
) -> Response:
    """Cancel a running handler; with ``purge=true`` also delete it (finished or not)."""
    outcome = await route.service.cancel(
        handler_id, purge=params.flag(purge, "purge", False), principal=route.principal
    )
    return json_response({"status": outcome})


async def retry_handler(route: RouteContext, handler_id: str) -> Response:
    """Run a failed handler again from its last checkpoint (409 unless it failed)."""
    handler = await route.service.retry(handler_id, principal=route.principal)
    return json_response(handler_json(handler))


_SCOPED_ROUTES: tuple[tuple[str, str, Callable[..., Any], type[BaseModel], Responses], ...] = (
    ("GET", "/handlers/{handler_id}", get_handler, HandlerData, HANDLER_CODES),
    ("GET", "/results/{handler_id}", get_result, LegacyHandlerData, LEGACY_CODES),
    ("POST", "/handlers/{handler_id}/cancel", cancel_handler, CancelResponse, _CANCEL_CODES),
    ("POST", "/handlers/{handler_id}/retry", retry_handler, HandlerData, _RETRY_CODES),
)


def register(router: APIRouter, binding: RouterBinding) -> None:
    """Add the handler routes, each scoped to the caller."""
    router.add_api_route(
        "/handlers",
        binding.endpoint(list_handlers, annotations={"limit": binding.page_limit}),
        methods=["GET"],
        response_model=HandlersList,
        responses=BAD_INPUT,
    )
    for method, path, endpoint, model, responses in _SCOPED_ROUTES:
        router.add_api_route(
            path,
            binding.endpoint(endpoint),
            methods=[method],
            response_model=model,
            responses=responses,
            deprecated=True if endpoint is get_result else None,
        )

"""``/handlers`` and ``/results``: listing, reading, cancelling and retrying runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from .._http import json_response
from ..models import CancelResponse, HandlerData, HandlersList, LegacyHandlerData
from . import params
from .deps import PageLimitDep, PrincipalDep, RouterBinding, ServiceDep
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
    service: ServiceDep,
    principal: PrincipalDep,
    limit: PageLimitDep,
    status: Repeated = None,
    workflow_name: Repeated = None,
    handler_id: Repeated = None,
    version: Repeated = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    order: Literal["asc", "desc"] = "asc",
) -> Response:
    """Handlers, oldest first (``order=desc`` for newest first), a page at a time.

    ``version`` keeps the runs started by those workflow versions (see
    ``add_workflow(..., version=...)``); the version itself is not part of the
    handler JSON, which keeps the reference server's shape.
    """
    page = await service.list_page(
        statuses=params.status_filter(status),
        workflow_names=params.name_filter(workflow_name),
        handler_ids=params.name_filter(handler_id),
        versions=params.name_filter(version),
        descending=order == "desc",
        after=None if not cursor else params.decode_cursor(cursor),
        limit=limit,
        principal=principal,
    )
    next_cursor = None if page.next_cursor is None else params.encode_cursor(page.next_cursor)
    return json_response(
        {"handlers": [handler_json(h) for h in page.handlers], "next_cursor": next_cursor}
    )


async def get_handler(handler_id: str, service: ServiceDep, principal: PrincipalDep) -> Response:
    """The handler; 200 when completed, 202 while running, 500 if failed or cancelled."""
    return handler_by_state(await service.get(handler_id, principal=principal))


async def get_result(handler_id: str, service: ServiceDep, principal: PrincipalDep) -> Response:
    """Like ``GET /handlers/{id}`` with the result unwrapped to its value (legacy)."""
    handler = await service.get(handler_id, principal=principal)
    body = handler_json(handler)
    body["result"] = legacy_result(handler.result_envelope())
    return json_response(body, HANDLER_STATUS_CODE[handler.status])


async def cancel_handler(
    handler_id: str, service: ServiceDep, principal: PrincipalDep, purge: str | None = None
) -> Response:
    """Cancel a running handler; with ``purge=true`` also delete it (finished or not)."""
    outcome = await service.cancel(
        handler_id, purge=params.flag(purge, "purge", False), principal=principal
    )
    return json_response({"status": outcome})


async def retry_handler(handler_id: str, service: ServiceDep, principal: PrincipalDep) -> Response:
    """Run a failed handler again from its last checkpoint (409 unless it failed)."""
    handler = await service.retry(handler_id, principal=principal)
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
        list_handlers,
        methods=["GET"],
        response_model=HandlersList,
        responses=BAD_INPUT,
        dependencies=binding.listing,
    )
    for method, path, endpoint, model, responses in _SCOPED_ROUTES:
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            response_model=model,
            responses=responses,
            deprecated=True if endpoint is get_result else None,
            dependencies=binding.caller,
        )

"""FastAPI dependencies giving host endpoints the run service and the store.

::

    @app.post("/orders/{order_id}/process")
    async def process(order_id: str, service: WorkflowServiceDep) -> dict[str, str]:
        handler = await service.start_run("process-order", OrderStart(order_id=order_id))
        return {"handler_id": handler.handler_id}

They find the service of the workflow router whose lifespan runs in the app
(one workflow router per application). Tests replace them with
``app.dependency_overrides[get_workflow_service] = ...``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from .service.service import WorkflowService
from .store.base import AbstractWorkflowStore


def get_workflow_service(request: Request) -> WorkflowService:
    """The run service of the app's workflow router; 503 until its lifespan started it."""
    service = getattr(request.app.state, "workflow_service", None)
    if not isinstance(service, WorkflowService):
        raise HTTPException(
            503,
            "No workflow service: include the workflow router in this app "
            "(app.include_router) or enter router.lifespan_context(app) in its lifespan",
            headers={"Retry-After": "5"},
        )
    return service


def get_workflow_store(
    service: Annotated[WorkflowService, Depends(get_workflow_service)],
) -> AbstractWorkflowStore:
    """The store behind the app's workflow router."""
    return service.store


WorkflowServiceDep = Annotated[WorkflowService, Depends(get_workflow_service)]
"""``service: WorkflowServiceDep`` in an endpoint's parameters."""

WorkflowStoreDep = Annotated[AbstractWorkflowStore, Depends(get_workflow_store)]
"""``store: WorkflowStoreDep`` in an endpoint's parameters."""

"""``/workflows``: the registered workflows, their schemas, events and graphs."""

from __future__ import annotations

from fastapi import APIRouter, Response
from workflows.events import Event
from workflows.representation import get_workflow_representation

from .._http import json_response
from ..models import WorkflowEventsList, WorkflowGraphResponse, WorkflowSchema, WorkflowsList
from .deps import RouteContext, RouterBinding
from .responses import NOT_FOUND
from .wire import redacted_graph


async def list_workflows(route: RouteContext) -> Response:
    """Names of the registered workflows."""
    return json_response({"workflows": route.service.registry.names})


async def workflow_schema(route: RouteContext, name: str) -> Response:
    """JSON schemas of the workflow's start and stop events."""
    workflow = route.service.registry.get(name).workflow
    start: type[Event] = workflow.start_event_class
    stop: type[Event] = workflow.stop_event_class
    return json_response({"start": start.model_json_schema(), "stop": stop.model_json_schema()})


async def workflow_events(route: RouteContext, name: str) -> Response:
    """JSON schemas of the events the workflow declares (and accepts)."""
    events = route.service.registry.get(name).declared_events
    return json_response({"events": [event.model_json_schema() for event in events]})


async def workflow_representation(route: RouteContext, name: str) -> Response:
    """The workflow's graph of steps and events (minus server paths and config values)."""
    graph = get_workflow_representation(route.service.registry.get(name).workflow)
    return json_response({"graph": redacted_graph(graph.model_dump(mode="json"))})


def register(router: APIRouter, binding: RouterBinding) -> None:
    """Add the workflow routes (they list what is served, so they ask for no principal)."""
    router.add_api_route(
        "/workflows",
        binding.endpoint(list_workflows, scoped=False),
        methods=["GET"],
        response_model=WorkflowsList,
    )
    for path, endpoint, model in (
        ("/workflows/{name}/schema", workflow_schema, WorkflowSchema),
        ("/workflows/{name}/events", workflow_events, WorkflowEventsList),
        ("/workflows/{name}/representation", workflow_representation, WorkflowGraphResponse),
    ):
        router.add_api_route(
            path,
            binding.endpoint(endpoint, scoped=False),
            methods=["GET"],
            response_model=model,
            responses=NOT_FOUND,
        )

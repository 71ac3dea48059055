"""``service.registration``: serving a workflow on one service's runtime and store."""

from __future__ import annotations

import pytest
from workflows.events import StartEvent

from llama_workflows_asgi import MemoryWorkflowStore, ServiceConfig, WorkflowService, codec
from llama_workflows_asgi.errors import BadEventError
from llama_workflows_asgi.service.registration import register_workflow
from tests.support.workflows import CustomWorkflow, GreetWorkflow, MyStop, Note

pytestmark = pytest.mark.timeout(20)


def service(config: ServiceConfig | None = None) -> WorkflowService:
    return WorkflowService(MemoryWorkflowStore(), config=config)


def test_a_workflow_is_served_under_its_name_and_version() -> None:
    target = service()
    entry = register_workflow(target._basis, "custom", CustomWorkflow(), (), "v1")
    assert target.registry.get("custom") is entry
    assert (entry.name, entry.version) == ("custom", "v1")


def test_its_stop_classes_are_what_the_store_reads_results_back_as() -> None:
    target = service()
    register_workflow(target._basis, "custom", CustomWorkflow(), (), None)
    assert target.store.result_classes[codec.qualified_name(MyStop)] is MyStop


def test_sent_events_are_decoded_within_the_configured_depth() -> None:
    target = service(ServiceConfig(max_json_depth=3))
    entry = register_workflow(target._basis, "greet", GreetWorkflow(), (Note,), None)
    assert entry.events.max_depth == 3
    assert isinstance(entry.events.decode('{"type": "Note", "value": {"text": "x"}}'), Note)
    with pytest.raises(BadEventError, match="deeper than the limit of 3"):
        entry.events.decode('{"type": "Note", "value": {"text": "x", "more": [[1]]}}')


def test_an_invalid_version_is_refused_before_the_workflow_moves() -> None:
    workflow = GreetWorkflow()
    with pytest.raises(ValueError, match="Invalid workflow version"):
        register_workflow(service()._basis, "greet", workflow, (), "no spaces")
    # Still unbound: another service may serve it.
    assert register_workflow(service()._basis, "greet", workflow, (), None).name == "greet"


async def test_a_workflow_that_ran_on_another_service_is_refused() -> None:
    workflow = GreetWorkflow()
    first = service()
    register_workflow(first._basis, "greet", workflow, (), None)
    async with first.running_context():
        assert (await first.run("greet", StartEvent(name="once"))).status == "completed"
    with pytest.raises(ValueError, match="already run elsewhere"):
        register_workflow(service()._basis, "greet", workflow, (), None)


def test_a_taken_name_is_refused() -> None:
    target = service()
    register_workflow(target._basis, "greet", GreetWorkflow(), (), None)
    with pytest.raises(ValueError, match="greet"):
        register_workflow(target._basis, "greet", GreetWorkflow(), (), None)

"""``registry``: the workflows a router serves, by name."""

from __future__ import annotations

import pytest
from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from llama_workflows_asgi.errors import NotFoundError, WorkflowNotFoundError
from llama_workflows_asgi.registry import WorkflowRegistry


class Question(Event):
    text: str


class Answer(Event):
    text: str


class Streamed(Event):
    """Only written to the stream: not in any step signature."""


class AskWorkflow(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> Question:
        return Question(text="?")

    @step
    async def answer(self, ev: Question) -> StopEvent:
        return StopEvent(result=ev.text)


class EchoWorkflow(Workflow):
    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.get("text"))


def test_names_keep_registration_order() -> None:
    registry = WorkflowRegistry()
    for name in ["zeta", "alpha", "mid"]:
        registry.add(name, EchoWorkflow())
    assert registry.names == ["zeta", "alpha", "mid"]
    assert [entry.name for entry in registry] == ["zeta", "alpha", "mid"]
    assert len(registry) == 3


def test_get_and_find() -> None:
    registry = WorkflowRegistry()
    workflow = EchoWorkflow()
    entry = registry.add("echo", workflow)
    assert registry.get("echo") is entry
    assert registry.find("echo") is entry
    assert entry.workflow is workflow
    assert registry.find("missing") is None


def test_unknown_name_is_workflow_not_found() -> None:
    registry = WorkflowRegistry()
    with pytest.raises(WorkflowNotFoundError) as caught:
        registry.get("missing")
    assert isinstance(caught.value, NotFoundError)
    assert caught.value.name == "missing"
    assert str(caught.value) == "Workflow 'missing' not found"


def test_duplicate_names_are_refused_and_the_first_kept() -> None:
    registry = WorkflowRegistry()
    first = registry.add("echo", EchoWorkflow())
    with pytest.raises(ValueError, match="already registered"):
        registry.add("echo", EchoWorkflow())
    assert registry.get("echo") is first
    assert registry.names == ["echo"]


@pytest.mark.parametrize("name", ["", "a/b", "/", "trailing/"])
def test_invalid_names_are_refused(name: str) -> None:
    registry = WorkflowRegistry()
    with pytest.raises(ValueError, match="Invalid workflow name"):
        registry.add(name, EchoWorkflow())
    assert registry.names == []


def test_declared_events_are_step_events_plus_additional_ones_without_duplicates() -> None:
    entry = WorkflowRegistry().add("ask", AskWorkflow(), [Streamed, Question, Streamed])
    declared = entry.declared_events
    assert len(declared) == len(set(declared))
    assert set(declared) == {StartEvent, Question, StopEvent, Streamed}
    assert declared[-1] is Streamed  # additional events come after the workflow's own


def test_the_event_registry_accepts_additional_events() -> None:
    registry = WorkflowRegistry()
    plain = registry.add("plain", AskWorkflow())
    extended = registry.add("extended", AskWorkflow(), [Streamed, Answer])
    assert "Streamed" not in plain.events.names
    assert {"Streamed", "Answer", "Question"} <= set(extended.events.names)
    assert extended.events.decode({"type": "Answer", "value": {"text": "42"}}) == Answer(text="42")
    assert extended.events.start_class is StartEvent

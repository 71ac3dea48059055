"""``service.live``: one run executing here, what it has not written yet, and its outcome."""

from __future__ import annotations

import json

from workflows.events import (
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

from llama_workflows_asgi.registry import WorkflowRegistry
from llama_workflows_asgi.service.live import LiveRun, Outcome, outcome_of
from llama_workflows_asgi.service.runtime import DurableRuntime
from llama_workflows_asgi.store import RunProgress
from tests.support.factories import at, handler
from tests.support.workflows import GreetWorkflow, ProgressEvent


def test_the_outcome_of_each_terminal_event() -> None:
    done = StopEvent(result=1)
    assert outcome_of(done, "{}") == Outcome("completed", result="{}", event=done)
    assert outcome_of(WorkflowCancelledEvent(), "{}") == Outcome("cancelled")
    failed = WorkflowFailedEvent(step_name="s", exception=RuntimeError("bad\x00 thing"))
    assert outcome_of(failed, "{}") == Outcome("failed", error="bad thing")  # storable text
    timed_out = outcome_of(WorkflowTimedOutEvent(timeout=2, active_steps=[]), "{}")
    assert timed_out == Outcome("failed", error="Workflow timed out after 2.0s")


def new_run(dirty: list[LiveRun]) -> LiveRun:
    workflow = GreetWorkflow()
    entry = WorkflowRegistry().add("greet", workflow, ())
    return LiveRun(
        handler("h1", workflow_name="greet"),
        workflow=entry,
        serializer=DurableRuntime().get_serializer(workflow),
        next_sequence=5,
        on_dirty=dirty.append,
        on_idle=lambda _: None,
        checkpoints=True,
    )


def test_streamed_events_are_numbered_and_mark_the_run_dirty() -> None:
    dirty: list[LiveRun] = []
    live = new_run(dirty)
    live.observe_event(ProgressEvent(msg="a", i=0))
    live.observe_event(ProgressEvent(msg="b", i=1))
    assert dirty == [live, live]
    assert live.collect("owner", at(1)) is None  # nothing is written before the engine runs
    assert live.outcome is None


def test_failing_a_run_records_the_failure_and_keeps_its_first_outcome() -> None:
    dirty: list[LiveRun] = []
    live = new_run(dirty)
    live.fail("cannot save\x00 it")
    assert live.outcome == Outcome("failed", error="cannot save it")
    live.fail("a second reason")
    assert live.outcome.error == "cannot save it"
    assert dirty  # the failure is to be written


def test_an_acknowledged_write_publishes_its_events_and_finishes_the_run() -> None:
    live = new_run([])
    live.observe_event(ProgressEvent(msg="a", i=0))
    live.observe_event(StopEvent(result={"x": 1}))
    assert live.outcome is not None
    assert live.outcome.status == "completed"
    assert json.loads(live.outcome.result or "")["value"] == {"result": {"x": 1}}
    events = live._pending.events
    assert [e.sequence for e in events] == [5, 6]
    written = RunProgress(
        "h1", "run-h1", owner_id="o", updated_at=at(2), events=events, status="completed"
    )
    live.acknowledge(written)
    assert live.durable_sequence == 6
    assert [e.sequence for e in live.tail] == [5, 6]
    assert live.finished.is_set()
    assert live.settled
    assert live.final is not None
    assert (live.final.status, live.final.completed_at, live.final.owner_id) == (
        "completed",
        at(2),
        None,
    )


def test_a_failed_write_is_kept_for_the_next_one() -> None:
    dirty: list[LiveRun] = []
    live = new_run(dirty)
    live.observe_event(ProgressEvent(msg="a", i=0))
    events = list(live._pending.events)
    live._pending.events.clear()
    refused = RunProgress("h1", "run-h1", owner_id="o", updated_at=at(2), events=events)
    live.requeue(refused)
    assert live._pending.events == events
    assert not live.finished.is_set()
    assert dirty[-1] is live


def test_a_poisoned_run_writes_only_its_failure() -> None:
    reason = "the store refused it"
    live = new_run([])
    live.observe_event(ProgressEvent(msg="a", i=0))
    live.poison(reason)
    assert live.poisoned
    assert live.outcome == Outcome("failed", error=reason)
    [failure] = live._pending.events
    assert failure.event_type == "WorkflowFailedEvent"
    assert failure.sequence == 5  # numbered after what was written, not what was dropped

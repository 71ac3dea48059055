"""``service.live``: one run executing here, what the engine reports, failing and poisoning it."""

from __future__ import annotations

from llama_workflows_asgi.service.live import LiveRun
from llama_workflows_asgi.service.outcome import Outcome
from tests.support.factories import at
from tests.support.runs import new_run
from tests.support.workflows import ProgressEvent


def test_streamed_events_are_numbered_and_mark_the_run_dirty() -> None:
    dirty: list[LiveRun] = []
    live = new_run(dirty)
    live.observe_event(ProgressEvent(msg="a", i=0))
    live.observe_event(ProgressEvent(msg="b", i=1))
    assert [e.sequence for e in live._pending.events] == [5, 6]
    assert dirty == [live]  # once until the writer collects it
    assert live.collect("owner", at(1)) is None  # nothing is written before the engine runs
    assert live.outcome is None
    live.observe_event(ProgressEvent(msg="c", i=2))
    assert dirty == [live, live]  # news since it was collected


def test_failing_a_run_records_the_failure_and_keeps_its_first_outcome() -> None:
    dirty: list[LiveRun] = []
    live = new_run(dirty)
    live.fail("cannot save\x00 it")
    assert live.outcome == Outcome("failed", error="cannot save it")
    live.fail("a second reason")
    assert live.outcome.error == "cannot save it"
    assert dirty  # the failure is to be written


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

"""``service.outcome``: how a run ended, in text a database column takes."""

from __future__ import annotations

from workflows.events import (
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

from llama_workflows_asgi.service.outcome import Outcome, outcome_of, storable


def test_the_outcome_of_each_terminal_event() -> None:
    done = StopEvent(result=1)
    assert outcome_of(done, "{}") == Outcome("completed", result="{}", event=done)
    assert outcome_of(WorkflowCancelledEvent(), "{}") == Outcome("cancelled")
    failed = WorkflowFailedEvent(step_name="s", exception=RuntimeError("bad\x00 thing"))
    assert outcome_of(failed, "{}") == Outcome("failed", error="bad thing")  # storable text
    timed_out = outcome_of(WorkflowTimedOutEvent(timeout=2, active_steps=[]), "{}")
    assert timed_out == Outcome("failed", error="Workflow timed out after 2.0s")


def test_storable_text_drops_nul_and_unpaired_surrogates() -> None:
    assert storable("a\x00b") == "ab"
    assert storable("x\ud800y") == "x?y"
    assert storable("café") == "café"

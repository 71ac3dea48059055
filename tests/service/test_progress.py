"""``service.progress``: a live run's unwritten progress, its write in flight, what streams see."""

from __future__ import annotations

import json

from workflows.events import StopEvent

from llama_workflows_asgi.service.live import LiveRun
from llama_workflows_asgi.store import RunProgress
from tests.support.factories import at
from tests.support.runs import new_run
from tests.support.workflows import ProgressEvent


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

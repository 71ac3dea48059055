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


def _write(live: LiveRun, count: int) -> RunProgress:
    for i in range(count):
        live.observe_event(ProgressEvent(msg="a", i=i))
    events, live._pending.events = live._pending.events, []
    written = RunProgress("h1", "run-h1", owner_id="o", updated_at=at(2), events=events)
    live.acknowledge(written)
    return written


def test_a_write_longer_than_the_tail_stays_whole_for_its_streams() -> None:
    live = new_run([])
    live._tail_size = 2
    _write(live, 3)  # sequences 5..7
    assert [e.sequence for e in live.tail] == [5, 6, 7]
    assert [e.sequence for e in live.events_after(4) or []] == [5, 6, 7]
    _write(live, 1)  # 8: the tail keeps it and at most two before it
    assert [e.sequence for e in live.tail] == [6, 7, 8]
    assert [e.sequence for e in live.events_after(5) or []] == [6, 7, 8]
    assert [e.sequence for e in live.events_after(7) or []] == [8]
    assert live.events_after(8) == []  # nothing written after the cursor yet
    assert live.events_after(4) is None  # 5 left the tail: the store has it

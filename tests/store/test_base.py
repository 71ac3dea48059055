"""``store.base``: the store's records and their validation, as the interface names them.

The results a handler carries are tested in ``tests/unit/test_handler_result.py``;
every store's behaviour against the interface in ``test_contract.py``; the
interface's defaults in ``test_defaults.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from workflows.events import StopEvent

from llama_workflows_asgi.errors import ConflictError
from llama_workflows_asgi.store.base import (
    FINISHED_STATUSES,
    TERMINAL_STATUSES,
    HandlerCursor,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    RunProgress,
    StoredEvent,
    finished_statuses,
    prune_cutoff,
    utcnow,
)
from tests.support.factories import T0, handler

EAST = timezone(timedelta(hours=2))


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_a_prune_cutoff_is_an_age_before_now_or_an_aware_moment() -> None:
    assert prune_cutoff(timedelta(hours=1), now=T0) == T0 - timedelta(hours=1)
    assert prune_cutoff(timedelta(0), now=T0) == T0
    moment = prune_cutoff(T0.astimezone(EAST))
    assert moment == T0
    assert moment.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="negative"):
        prune_cutoff(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone-aware"):
        prune_cutoff(T0.replace(tzinfo=None))


def test_only_finished_statuses_may_be_pruned_and_come_back_in_order() -> None:
    assert finished_statuses({"cancelled", "completed"}) == ["completed", "cancelled"]
    assert finished_statuses(FINISHED_STATUSES) == list(FINISHED_STATUSES)
    assert finished_statuses([]) == []
    with pytest.raises(ValueError, match="Cannot prune status 'running'"):
        finished_statuses(["completed", "running"])
    assert set(FINISHED_STATUSES) == TERMINAL_STATUSES


def test_a_handler_knows_when_it_is_finished() -> None:
    assert not handler("h").is_terminal
    for status in FINISHED_STATUSES:
        assert handler("h", status=status).is_terminal


def test_a_handler_refuses_unknown_fields_and_statuses() -> None:
    with pytest.raises(ValidationError, match="extra"):
        PersistentHandler(handler_id="h", workflow_name="w", status="running", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="status"):
        PersistentHandler(handler_id="h", workflow_name="w", status="paused")  # type: ignore[arg-type]
    fresh = PersistentHandler(handler_id="h", workflow_name="w", status="running")
    assert fresh.started_at.utcoffset() == timedelta(0)
    assert (fresh.resume_attempts, fresh.run_id, fresh.previous_owner_id) == (0, None, None)


def test_a_dumped_handler_shows_its_result_as_the_stored_envelope() -> None:
    row = handler("h", status="completed", result=StopEvent(result={"n": 1}))
    dumped = row.model_dump()
    assert dumped["result"] == row.result_envelope()
    assert dumped["result"]["value"] == {"result": {"n": 1}}
    assert handler("h").model_dump()["result"] is None
    # Read back from what a store keeps, the same envelope is shown again.
    again = handler("h").with_stored_result(dumped["result"], {})
    assert again.result_envelope() == dumped["result"]


def test_a_query_validates_its_filters() -> None:
    assert HandlerQuery().load_ctx
    assert HandlerQuery(limit=1).limit == 1
    with pytest.raises(ValidationError):
        HandlerQuery(limit=0)
    with pytest.raises(ValidationError):
        HandlerQuery(status_in=["paused"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        HandlerQuery(owner_in=["x"])  # type: ignore[call-arg]
    cursor = HandlerCursor(T0, "h")
    assert HandlerQuery(after=cursor, descending=True).after == cursor


def test_records_default_to_an_ordinary_running_write() -> None:
    stored = StoredEvent(3, "{}", "Tick")
    assert (stored.internal, stored.terminal) == (False, False)
    assert stored.created_at.utcoffset() == timedelta(0)
    item = RunProgress("h", "run-h", "me", T0)
    assert (item.status, item.ctx, item.release, item.reset_attempts) == (
        "running",
        None,
        False,
        False,
    )
    assert item.events == []
    assert item.events is not RunProgress("g", "run-g", "me", T0).events


def test_conflicts_name_the_handler_or_say_the_key_is_used() -> None:
    taken = HandlerExistsError("h-1")
    assert isinstance(taken, ConflictError)
    assert (str(taken), taken.handler_id) == ("Handler 'h-1' already exists", "h-1")
    reused = IdempotencyKeyExistsError("secret-key")
    assert isinstance(reused, ConflictError)
    assert reused.key == "secret-key"
    assert "secret-key" not in str(reused)  # a key may be a caller's secret

"""``store.records`` and ``store.results``: the store's vocabulary, also named by ``store.base``.

How results read back is tested in ``tests/unit/test_handler_result.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from workflows.events import StopEvent

from llama_workflows_asgi.store import base, records, results
from llama_workflows_asgi.store.records import (
    HandlerQuery,
    PersistentHandler,
    finished_statuses,
    prune_cutoff,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_base_names_every_name_of_the_vocabulary_as_the_same_object() -> None:
    for module in (records, results):
        public = [n for n in vars(module) if not n.startswith("_") and n in base.__all__]
        for name in public:
            assert getattr(base, name) is getattr(module, name), name
    named = {"PersistentHandler", "RunProgress", "StoredEvent", "RESULT_CLASSES", "utcnow"}
    assert named <= set(base.__all__)


def test_a_cutoff_is_an_age_back_from_now_or_an_aware_moment() -> None:
    assert prune_cutoff(timedelta(days=1), NOW) == NOW - timedelta(days=1)
    moment = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert prune_cutoff(moment) == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="negative"):
        prune_cutoff(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone-aware"):
        prune_cutoff(datetime(2026, 1, 1))


def test_only_finished_statuses_may_be_pruned() -> None:
    assert finished_statuses({"failed", "completed"}) == ["completed", "failed"]
    with pytest.raises(ValueError, match="'running'"):
        finished_statuses({"running", "failed"})


def test_a_handler_shows_its_result_as_the_envelope_it_was_stored_as() -> None:
    stored = {"value": {"result": 1}, "qualified_name": "elsewhere.Done", "type": "Done"}
    row = PersistentHandler(handler_id="h", workflow_name="w", status="completed", result=stored)
    assert isinstance(row.result, StopEvent)
    assert row.is_terminal
    assert row.result_envelope() == stored  # a class not served here keeps its own name
    assert row.model_dump()["result"] == stored


def test_a_query_refuses_unknown_filters_and_a_page_below_one() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        HandlerQuery(limit=0)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        HandlerQuery(owner_in=["x"])  # type: ignore[call-arg]

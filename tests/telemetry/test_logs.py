"""``telemetry._logs``: one structured line per run state change, fields as record attributes."""

from __future__ import annotations

import logging

import pytest

from llama_workflows_asgi.telemetry import _logs
from tests.support.factories import handler

RUNS = "llama_workflows_asgi.runs"


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == RUNS]


def fields(record: logging.LogRecord, *names: str) -> tuple[object, ...]:
    """The ``extra=`` fields ``names`` of ``record``."""
    return tuple(getattr(record, name) for name in names)


def test_a_state_line_names_the_run_in_its_message_and_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    row = handler("h-1", workflow_name="greet")
    with caplog.at_level(logging.INFO, RUNS):
        _logs.state(row, "started", attempt=2)
    (record,) = records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage() == "run run-h-1 started (handler h-1, workflow greet)"
    named = fields(record, "handler_id", "run_id", "workflow_name", "run_state", "attempt")
    assert named == ("h-1", "run-h-1", "greet", "started", 2)


def test_nothing_is_built_when_the_level_is_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, RUNS):
        _logs.state(handler("h"), "started")
        _logs.ended(handler("h"), "completed", None)
    assert records(caplog) == []


def test_a_resume_informs_and_an_adoption_warns(caplog: pytest.LogCaptureFixture) -> None:
    row = handler("h", resume_attempts=3)
    with caplog.at_level(logging.INFO, RUNS):
        _logs.resumed(row, adopted=False, previous_owner=None)
        _logs.resumed(row, adopted=True, previous_owner="host:9:Lgone")
    resumed, adopted = records(caplog)
    assert resumed.levelno == logging.INFO
    assert fields(resumed, "run_state", "resume_attempt") == ("resumed", 3)
    assert not hasattr(resumed, "previous_owner")
    assert adopted.levelno == logging.WARNING
    assert fields(adopted, "run_state", "previous_owner", "resume_attempt") == (
        "adopted",
        "host:9:Lgone",
        3,
    )


@pytest.mark.parametrize(
    ("status", "error", "level"),
    [
        ("completed", None, logging.INFO),
        ("failed", "ValueError: kaboom", logging.INFO),
        ("released", None, logging.INFO),
        ("lost", None, logging.WARNING),
    ],
)
def test_an_end_says_how_and_a_lost_run_warns(
    caplog: pytest.LogCaptureFixture, status: str, error: str | None, level: int
) -> None:
    with caplog.at_level(logging.INFO, RUNS):
        _logs.ended(handler("h"), status, error)
    (record,) = records(caplog)
    assert record.levelno == level
    assert fields(record, "run_state", "error") == (status, error)

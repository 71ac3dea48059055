"""``_error_text``: an exception's message as a person reads it, in one line."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from llama_workflows_asgi._error_text import describe_validation_error, readable_error


def test_readable_error_drops_module_paths_and_names_the_root_cause() -> None:
    try:
        try:
            raise ValueError("Maximum serialization depth exceeded")
        except ValueError as inner:
            message = "Failed to serialize value: <class 'workflows.events.StartEvent'>: "
            raise ValueError(message) from inner
    except ValueError as exc:
        text = readable_error(exc)
    assert text == "Failed to serialize value: StartEvent (Maximum serialization depth exceeded)"
    assert readable_error(TypeError("bad tests.support.crash_app.Opaque\x00")) == "bad Opaque"


class Point(BaseModel):
    x: int
    y: int


def test_a_validation_error_is_one_line_naming_each_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Point.model_validate({"x": "many"})
    text = describe_validation_error(caught.value)
    assert readable_error(caught.value) == text
    assert text == (
        "x: Input should be a valid integer, unable to parse string as an integer; "
        "y: Field required"
    )


def test_a_wrapped_driver_error_loses_its_sql() -> None:
    class DriverError(Exception):
        orig = ValueError("duplicate key value\n[SQL: INSERT INTO handlers ...]")

    assert readable_error(DriverError("wrapped")) == "duplicate key value"

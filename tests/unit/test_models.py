"""``models``: the wire models, field for field what the official client parses."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from llama_agents.client import protocol as client
from pydantic import BaseModel, ValidationError

from llama_workflows_asgi import models
from llama_workflows_asgi.service import Status
from tests.support.http import ENVELOPE_KEYS, HANDLER_KEYS

HANDLER: dict[str, Any] = {
    "handler_id": "h",
    "workflow_name": "greet",
    "run_id": "r",
    "error": None,
    "result": None,
    "status": "running",
    "started_at": "2024-05-06T07:08:09+00:00",
    "updated_at": None,
    "completed_at": None,
}

PAIRS: list[tuple[type[BaseModel], type[BaseModel]]] = [
    (models.HandlerData, client.HandlerData),
    (models.HandlersList, client.HandlersListResponse),
    (models.HealthResponse, client.HealthResponse),
    (models.WorkflowsList, client.WorkflowsListResponse),
    (models.SendEventResponse, client.SendEventResponse),
    (models.CancelResponse, client.CancelHandlerResponse),
    (models.WorkflowSchema, client.WorkflowSchemaResponse),
    (models.WorkflowEventsList, client.WorkflowEventsListResponse),
    (models.WorkflowGraphResponse, client.WorkflowGraphResponse),
]


def test_the_wire_keys_are_in_the_models_order() -> None:
    assert list(models.HandlerData.model_fields) == HANDLER_KEYS
    assert list(models.EventEnvelopeWithMetadata.model_fields) == ENVELOPE_KEYS


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda m: m.__name__)
def test_each_answer_has_the_clients_fields(ours: type[BaseModel], theirs: type[BaseModel]) -> None:
    assert set(ours.model_fields) >= set(theirs.model_fields)
    required = {name for name, field in theirs.model_fields.items() if field.is_required()}
    assert required <= {name for name, field in ours.model_fields.items() if field.is_required()}


def test_statuses_are_the_four_of_the_protocol() -> None:
    status = models.HandlerData.model_fields["status"].annotation
    assert status == Status
    assert get_args(status) == ("running", "completed", "failed", "cancelled")
    with pytest.raises(ValidationError):
        models.HandlerData.model_validate(HANDLER | {"status": "lost"})


@pytest.mark.parametrize("key", ["run_id", "error", "result", "updated_at", "completed_at"])
def test_nullable_handler_keys_are_still_required(key: str) -> None:
    assert models.HandlerData.model_validate(HANDLER).result_unreadable is False
    with pytest.raises(ValidationError, match=key):
        models.HandlerData.model_validate({k: v for k, v in HANDLER.items() if k != key})


def test_the_legacy_result_is_any_value() -> None:
    legacy = models.LegacyHandlerData.model_validate(HANDLER | {"result": {"greeting": "hi"}})
    assert legacy.result == {"greeting": "hi"}
    assert models.LegacyHandlerData.model_validate(HANDLER | {"result": 3}).result == 3


def test_a_sent_envelope_keeps_extra_keys_and_a_run_request_every_form() -> None:
    sent = models.EventEnvelope.model_validate({"type": "Answer", "data": {"a": 1}})
    assert (sent.type, sent.value, sent.model_extra) == ("Answer", None, {"data": {"a": 1}})
    for start in [None, "{}", {"name": "Ada"}, {"type": "StartEvent", "value": {}}]:
        assert models.RunRequest.model_validate({"start_event": start, "context": {}})
    assert models.SendEventRequest.model_validate({"event": "{}"}).step is None
    with pytest.raises(ValidationError):
        models.SendEventRequest.model_validate({})


def test_the_listing_cursor_is_optional_and_errors_are_a_string() -> None:
    assert models.HandlersList(handlers=[]).next_cursor is None
    assert models.ErrorResponse(detail="no").model_dump() == {"detail": "no"}
    with pytest.raises(ValidationError):
        models.ErrorResponse.model_validate({"detail": [{"msg": "a list"}]})
    with pytest.raises(ValidationError):
        models.CancelResponse.model_validate({"status": "purged"})

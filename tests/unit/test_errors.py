"""``errors``: the package's error tree, as the docstring draws it."""

from __future__ import annotations

import pytest

import llama_workflows_asgi
from llama_workflows_asgi import errors

TREE: dict[type[Exception], type[Exception]] = {
    errors.BadRequestError: errors.WorkflowServerError,
    errors.BadEventError: errors.BadRequestError,
    errors.PayloadTooLargeError: errors.BadRequestError,
    errors.NotFoundError: errors.WorkflowServerError,
    errors.WorkflowNotFoundError: errors.NotFoundError,
    errors.HandlerNotFoundError: errors.NotFoundError,
    errors.ConflictError: errors.WorkflowServerError,
    errors.StoreUnavailableError: errors.WorkflowServerError,
    errors.RunQueueFullError: errors.StoreUnavailableError,
    errors.SchemaError: errors.WorkflowServerError,
}


@pytest.mark.parametrize(("error", "parent"), TREE.items(), ids=lambda c: c.__name__)
def test_each_error_sits_under_its_parent(error: type[Exception], parent: type[Exception]) -> None:
    assert error.__bases__ == (parent,)
    assert error.__name__ in (errors.__doc__ or "")


def test_the_tree_is_complete_and_rooted_in_one_error() -> None:
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert defined == {errors.WorkflowServerError, *TREE}
    assert errors.WorkflowServerError.__bases__ == (Exception,)


def test_not_found_errors_name_what_is_missing() -> None:
    workflow = errors.WorkflowNotFoundError("greet")
    assert (str(workflow), workflow.name) == ("Workflow 'greet' not found", "greet")
    handler = errors.HandlerNotFoundError("h-1")
    assert (str(handler), handler.handler_id) == ("Handler 'h-1' not found", "h-1")


def test_an_outage_says_when_to_retry() -> None:
    assert errors.StoreUnavailableError("down").retry_after == 1
    full = errors.RunQueueFullError("every replica is full", retry_after=3)
    assert (str(full), full.retry_after) == ("every replica is full", 3)


def test_the_package_exports_the_errors_hosts_catch() -> None:
    for name in ("WorkflowServerError", "StoreUnavailableError", "HandlerNotFoundError"):
        assert getattr(llama_workflows_asgi, name) is getattr(errors, name)

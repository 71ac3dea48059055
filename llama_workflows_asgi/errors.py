"""The package's error tree.

Every error raised on purpose derives from :class:`WorkflowServerError`. The
store and the run service raise these; only the HTTP layer turns them into
status codes (see ``router``), so the same errors reach a host's own code
unchanged when it calls the service directly.

::

    WorkflowServerError
    ├── BadRequestError            400  malformed or invalid input
    │   ├── BadEventError          400  an event payload that cannot be accepted
    │   └── PayloadTooLargeError   413  a body over the configured limit
    ├── NotFoundError              404
    │   ├── WorkflowNotFoundError
    │   └── HandlerNotFoundError
    ├── ConflictError              409  the request contradicts the current state
    ├── StoreUnavailableError      503  the database cannot be reached right now
    │   └── RunQueueFullError      503  every replica is full and max_queued_runs wait
    └── SchemaError                     the database schema is missing or outdated
"""

from __future__ import annotations


class WorkflowServerError(Exception):
    """Root of every error this package raises on purpose."""


class BadRequestError(WorkflowServerError):
    """The request is malformed or names something invalid."""


class BadEventError(BadRequestError):
    """An event payload cannot be decoded into one of the workflow's events."""


class PayloadTooLargeError(BadRequestError):
    """A request body is larger than the configured limit."""


class NotFoundError(WorkflowServerError):
    """The named workflow or handler does not exist (or is not visible)."""


class WorkflowNotFoundError(NotFoundError):
    """No workflow is registered under the requested name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Workflow '{name}' not found")
        self.name = name


class HandlerNotFoundError(NotFoundError):
    """No handler with the requested id is visible to the caller."""

    def __init__(self, handler_id: str) -> None:
        super().__init__(f"Handler '{handler_id}' not found")
        self.handler_id = handler_id


class ConflictError(WorkflowServerError):
    """The request contradicts the handler's current state (e.g. already finished)."""


class StoreUnavailableError(WorkflowServerError):
    """The store cannot be reached or cannot write right now; retrying later may succeed."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RunQueueFullError(StoreUnavailableError):
    """This process is full and ``max_queued_runs`` runs already wait for room: retry later."""


class SchemaError(WorkflowServerError):
    """The database schema is missing or older than this package expects."""

"""Stores: where handlers, event logs and inboxes are kept."""

from .base import (
    FINISHED_STATUSES,
    TERMINAL_STATUSES,
    AbstractWorkflowStore,
    FinishedStatus,
    HandlerCursor,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    InboxEntry,
    PersistentHandler,
    RunProgress,
    Status,
    StoredEvent,
)
from .memory import MemoryWorkflowStore
from .schema import metadata
from .sqlalchemy import SqlAlchemyWorkflowStore, SqliteWorkflowStore

__all__ = [
    "FINISHED_STATUSES",
    "TERMINAL_STATUSES",
    "AbstractWorkflowStore",
    "FinishedStatus",
    "HandlerCursor",
    "HandlerExistsError",
    "HandlerQuery",
    "IdempotencyKeyExistsError",
    "InboxEntry",
    "MemoryWorkflowStore",
    "PersistentHandler",
    "RunProgress",
    "SqlAlchemyWorkflowStore",
    "SqliteWorkflowStore",
    "Status",
    "StoredEvent",
    "metadata",
]

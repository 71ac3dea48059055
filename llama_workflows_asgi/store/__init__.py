"""Stores: where handlers, event logs and inboxes are kept."""

from .base import (
    TERMINAL_STATUSES,
    AbstractWorkflowStore,
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
    "TERMINAL_STATUSES",
    "AbstractWorkflowStore",
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

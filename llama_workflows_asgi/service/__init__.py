"""The run service: durable execution of workflow runs.

Besides the service, this names the values its methods take and return (rows,
events, listing positions), so that callers above it need not reach into the store.
"""

from ..store.base import (
    AbstractWorkflowStore,
    HandlerCursor,
    PersistentHandler,
    Status,
    StoredEvent,
)
from .config import ServiceConfig
from .listing import HandlerPage
from .service import WorkflowService
from .streams import EventStream

__all__ = [
    "AbstractWorkflowStore",
    "EventStream",
    "HandlerCursor",
    "HandlerPage",
    "PersistentHandler",
    "ServiceConfig",
    "Status",
    "StoredEvent",
    "WorkflowService",
]

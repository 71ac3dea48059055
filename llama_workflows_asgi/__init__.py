"""Durable LlamaIndex Workflows, served from any FastAPI application.

::

    from fastapi import FastAPI
    from llama_workflows_asgi import SqlAlchemyWorkflowStore, workflow_router

    app = FastAPI()
    app.include_router(workflow_router(SqlAlchemyWorkflowStore(), workflows={"greet": Greet()}))
"""

from .dependencies import (
    WorkflowServiceDep,
    WorkflowStoreDep,
    get_workflow_service,
    get_workflow_store,
)
from .errors import (
    BadEventError,
    BadRequestError,
    ConflictError,
    HandlerNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    SchemaError,
    StoreUnavailableError,
    WorkflowNotFoundError,
    WorkflowServerError,
)
from .router import WorkflowRouter, workflow_router
from .server import WorkflowServer
from .service import ServiceConfig, WorkflowService
from .store import (
    AbstractWorkflowStore,
    HandlerQuery,
    MemoryWorkflowStore,
    PersistentHandler,
    SqlAlchemyWorkflowStore,
    SqliteWorkflowStore,
)

__all__ = [
    "AbstractWorkflowStore",
    "BadEventError",
    "BadRequestError",
    "ConflictError",
    "HandlerNotFoundError",
    "HandlerQuery",
    "MemoryWorkflowStore",
    "NotFoundError",
    "PayloadTooLargeError",
    "PersistentHandler",
    "SchemaError",
    "ServiceConfig",
    "SqlAlchemyWorkflowStore",
    "SqliteWorkflowStore",
    "StoreUnavailableError",
    "WorkflowNotFoundError",
    "WorkflowRouter",
    "WorkflowServer",
    "WorkflowServerError",
    "WorkflowService",
    "WorkflowServiceDep",
    "WorkflowStoreDep",
    "get_workflow_service",
    "get_workflow_store",
    "workflow_router",
]

"""The run service: durable execution of workflow runs."""

from .config import ServiceConfig
from .service import HandlerPage, WorkflowService

__all__ = ["HandlerPage", "ServiceConfig", "WorkflowService"]

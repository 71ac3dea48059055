"""``serve MODULE:OBJECT``: a ``WorkflowServer``, a FastAPI app or a dict of workflows."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer
import uvicorn
from fastapi import FastAPI
from workflows import Workflow

from ..server import WorkflowServer
from ..store.migrate import URL_ENV_VAR, database_url
from ..store.sqlalchemy import SqlAlchemyWorkflowStore
from ._common import Db, ExitCode, UsageError, fail, parse_url, run

TARGET_ENV_VAR = "LLAMA_WORKFLOWS_SERVE_TARGET"
"""Tells the app factory what to serve (uvicorn's reloader starts a fresh process)."""


def load_target(target: str) -> Any:
    """Import ``MODULE:OBJECT`` (the working directory first on the path)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"serve target {target!r} must look like MODULE:OBJECT")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r}: {error}") from None
    value = module
    for name in attribute.split("."):
        if not hasattr(value, name):
            raise UsageError(f"{module_name!r} has no attribute {attribute!r}")
        value = getattr(value, name)
    return value


def build_app(target: Any, db: str | None) -> FastAPI:
    """The ASGI app for a loaded target; a dict of workflows gets a server on ``db``."""
    if isinstance(target, WorkflowServer):
        return target.served_app()
    if isinstance(target, FastAPI):
        return target
    if (
        isinstance(target, Mapping)
        and target
        and all(isinstance(name, str) and isinstance(w, Workflow) for name, w in target.items())
    ):
        server = WorkflowServer(SqlAlchemyWorkflowStore(database_url(db)))
        for name, workflow in target.items():
            server.add_workflow(name, workflow)
        return server.served_app()
    raise UsageError(
        f"cannot serve a {type(target).__name__}: expected a WorkflowServer, "
        "a FastAPI app or a dict of workflows by name"
    )


def _check_store(target: Any, db: str | None) -> None:
    """Open the target's store once first: a bad or unmigrated database is a clear error."""
    if isinstance(target, WorkflowServer):
        store = target.store
    elif isinstance(target, Mapping):
        store = SqlAlchemyWorkflowStore(database_url(db))
    else:
        return  # a FastAPI app's store is its own business

    async def probe() -> None:
        await store.start()
        await store.close()  # started again, on uvicorn's event loop

    run(probe)


def create_app() -> FastAPI:
    """uvicorn factory used with ``--reload``: the target named in the environment."""
    return build_app(load_target(os.environ[TARGET_ENV_VAR]), os.environ.get(URL_ENV_VAR))


def serve(
    target: Annotated[str, typer.Argument(help="MODULE:OBJECT, e.g. app:server")],
    db: Db = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    reload: Annotated[bool, typer.Option("--reload", help="Restart when code changes.")] = False,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Serve workflows over HTTP with uvicorn.

    A dict of workflows is served on --db; a WorkflowServer or FastAPI app
    uses its own store (--db is exported as $LLAMA_WORKFLOWS_DATABASE_URL
    before it is imported, for apps that read it).
    """
    try:
        if db is not None:
            parse_url(db)
            os.environ[URL_ENV_VAR] = db
        loaded = load_target(target)
        app = None if reload else build_app(loaded, db)
    except UsageError as error:
        raise fail(ExitCode.USAGE, str(error)) from None
    _check_store(loaded, db)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        # Event streams stay open: bound how long they may hold up a shutdown.
        "timeout_graceful_shutdown": 10,
    }
    if app is not None:
        uvicorn.run(app, **options)
        return
    os.environ[TARGET_ENV_VAR] = target
    factory = f"{__name__}:create_app"
    uvicorn.run(factory, factory=True, reload=True, reload_dirs=[os.getcwd()], **options)

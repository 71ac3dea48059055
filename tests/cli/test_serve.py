"""``cli._serve``: loading ``MODULE:OBJECT`` and building the app ``serve`` runs.

A real ``serve`` process is started in ``test_cli`` (it serves runs the command line acts on).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from llama_workflows_asgi import WorkflowRouter, WorkflowServer, workflow_router
from llama_workflows_asgi.cli._common import UsageError
from llama_workflows_asgi.cli._serve import TARGET_ENV_VAR, build_app, create_app, load_target
from llama_workflows_asgi.store.migrate import URL_ENV_VAR
from tests.support import cli_app
from tests.support.cli import invoke


def test_serve_targets() -> None:
    assert build_app(load_target("tests.support.cli_app:server"), None).routes
    assert build_app(load_target("tests.support.cli_app:app"), None).routes
    for target in ["tests.support.cli_app", "no_such_module:x", "tests.support.cli_app:nope"]:
        with pytest.raises(UsageError):
            load_target(target)
    with pytest.raises(UsageError, match="cannot serve a int"):
        build_app(load_target("tests.support.cli_app:not_servable"), None)
    result = invoke("serve", "tests.support.cli_app:not_servable")
    assert (result.returncode, "cannot serve" in result.stderr) == (2, True)


def test_a_target_may_name_an_attribute_path() -> None:
    assert load_target("tests.support.cli_app:server.app") is cli_app.server.app
    with pytest.raises(UsageError, match=r"has no attribute 'server\.nope'"):
        load_target("tests.support.cli_app:server.nope")
    with pytest.raises(UsageError, match="must look like MODULE:OBJECT"):
        load_target(":server")


async def test_a_dict_of_workflows_is_served_on_the_database(tmp_path: Path) -> None:
    app = build_app(load_target("tests.support.cli_app:workflows"), f"sqlite:///{tmp_path}/s.db")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
        assert (await http.get("/workflows")).json() == {"workflows": ["five", "slow"]}
    for refused in ({}, {"x": 1}, {3: cli_app.workflows["five"]}):
        with pytest.raises(UsageError, match="cannot serve a dict"):
            build_app(refused, None)


def test_the_reload_factory_serves_the_target_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TARGET_ENV_VAR, "tests.support.cli_app:app")
    monkeypatch.delenv(URL_ENV_VAR, raising=False)
    app = create_app()
    assert isinstance(app, FastAPI)
    assert app is cli_app.app


def test_a_bad_database_url_is_refused_before_anything_is_imported() -> None:
    refused = invoke("serve", "tests.support.cli_app:workflows", "--db", "mysql://db/app")
    assert (refused.returncode, "bad database URL" in refused.stderr) == (2, True)
    no_module = invoke("serve", "no_such_module:app")
    assert (no_module.returncode, "cannot import 'no_such_module'" in no_module.stderr) == (2, True)


def test_serves_a_workflow_server_or_workflows_with_the_startup_heap_frozen(
    tmp_path: Path,
) -> None:
    server = WorkflowServer()
    assert server.router.freeze_heap is False  # its app alone does not freeze
    assert build_app(server, None) is server.app
    assert server.router.freeze_heap is True
    refused = WorkflowServer(freeze_heap=False)
    build_app(refused, None)
    assert refused.router.freeze_heap is False
    app = build_app(load_target("tests.support.cli_app:workflows"), f"sqlite:///{tmp_path}/f.db")
    assert [router.freeze_heap for router in workflow_routers(app)] == [True]
    host = FastAPI()
    host.include_router(workflow_router())
    assert build_app(host, None) is host  # a host's app is served as it is
    assert [router.freeze_heap for router in workflow_routers(host)] == [False]


def workflow_routers(app: FastAPI) -> list[WorkflowRouter]:
    """The workflow routers ``app`` includes."""
    included = (getattr(route, "original_router", None) for route in app.router.routes)
    return [router for router in included if isinstance(router, WorkflowRouter)]

"""``dashboard``: its routes in process, on or off, a fixed list of files, a strict policy.

The page running in a real browser is ``test_browser``.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI

from llama_workflows_asgi import WorkflowServer, workflow_router
from llama_workflows_asgi.dashboard import (
    _ASSET_TYPES,
    CONTENT_SECURITY_POLICY,
    add_dashboard_routes,
)
from tests.support.processes import ROOT

ASSETS = ROOT / "llama_workflows_asgi" / "dashboard" / "assets"


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_router_serves_no_page_unless_asked() -> None:
    app = FastAPI()
    app.include_router(workflow_router())
    async with client(app) as http:
        assert (await http.get("/ui")).status_code == 404


async def test_router_serves_the_page_under_its_prefix() -> None:
    app = FastAPI()
    app.include_router(workflow_router(dashboard=True), prefix="/wf")
    async with client(app) as http:
        page = await http.get("/wf/ui")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        css = await http.get("/wf/ui/assets/dashboard.css")
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        assert (await http.get("/ui")).status_code == 404
    # A page, not part of the API document.
    assert not [path for path in app.openapi()["paths"] if "/ui" in path]


async def test_workflow_server_serves_it_by_default() -> None:
    async with client(WorkflowServer().app) as http:
        assert (await http.get("/ui")).status_code == 200
        assert (await http.get("/ui/assets/dashboard.js")).status_code == 200
    async with client(WorkflowServer(dashboard=False).app) as http:
        assert (await http.get("/ui")).status_code == 404


async def test_only_listed_files_are_served() -> None:
    app = FastAPI()
    app.include_router(workflow_router(dashboard=True))
    async with client(app) as http:
        for name in ("index.html", "__init__.py", "dashboard.JS", "%2e%2e%2f__init__.py"):
            response = await http.get(f"/ui/assets/{name}")
            assert response.status_code == 404, name
            assert response.json() == {"detail": "Not Found"}
        assert (await http.get("/ui/assets/../__init__.py")).status_code == 404


def test_page_references_only_its_own_files() -> None:
    html = (ASSETS / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="ui/assets/([^"]+)"', html))
    assert referenced == set(_ASSET_TYPES) - {"index.html"}
    assert not re.search(r"<script>|<style|style=|https?://", html)
    script = (ASSETS / "dashboard.js").read_text()
    # Relative URLs only: no absolute path, no other origin, no eval.
    assert not re.search(r"fetch\(\s*[\"'`]/|https?://(?!www\.w3\.org/2000/svg)", script)
    assert "eval(" not in script
    assert "new Function" not in script
    assert "innerHTML" not in script


def test_assets_ship_in_the_wheel() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '    "llama_workflows_asgi.dashboard",\n' in pyproject  # in [tool.setuptools] packages
    assert '\n"llama_workflows_asgi.dashboard" = ["assets/*"]\n' in pyproject  # package data
    shipped = {path.name for path in Path(ASSETS).iterdir()}
    assert shipped == set(_ASSET_TYPES) | {"index.html"}


async def test_the_routes_go_on_any_router_at_any_path() -> None:
    router = APIRouter()
    add_dashboard_routes(router, "/runs/board")
    app = FastAPI()
    app.include_router(router)
    async with client(app) as http:
        page = await http.get("/runs/board")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.content == (ASSETS / "index.html").read_bytes()
        for name, media_type in _ASSET_TYPES.items():
            asset = await http.get(f"/runs/board/assets/{name}")
            assert asset.headers["content-type"] == media_type
            assert asset.content == (ASSETS / name).read_bytes()
        assert (await http.get("/ui")).status_code == 404


async def test_every_file_goes_out_with_the_same_strict_headers() -> None:
    router = APIRouter()
    add_dashboard_routes(router)
    app = FastAPI()
    app.include_router(router)
    expected = {
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    async with client(app) as http:
        for path in ["/ui", *(f"/ui/assets/{name}" for name in _ASSET_TYPES)]:
            response = await http.get(path)
            assert {key: response.headers.get(key) for key in expected} == expected, path
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY

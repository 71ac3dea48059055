"""The runs dashboard: a self-contained page served by the workflow router.

The page (one HTML file, one ES module, one stylesheet, an icon) ships inside
the package and talks only to the router's public HTTP API with relative URLs,
so it works under any prefix and behind the host's dependencies (auth).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response

from .._http import error_response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; object-src 'none'"
)
"""Sent with every dashboard file: nothing inline, nothing from elsewhere."""

_ASSET_TYPES: dict[str, str] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate each load so an upgraded package never serves a stale page.
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    # Only names from the fixed table reach this: a caller never names a file.
    return resources.files(__package__).joinpath("assets").joinpath(name).read_bytes()


def _file_response(name: str, media_type: str) -> Response:
    return Response(_asset(name), media_type=media_type, headers=_HEADERS)


def add_dashboard_routes(router: APIRouter, path: str = "/ui") -> None:
    """Serve the dashboard at ``path`` and its files at ``{path}/assets/{name}``.

    The routes are left out of the OpenAPI document: they serve a page, not the API.
    """

    @router.get(path, include_in_schema=False)
    async def dashboard_page() -> Response:
        """The dashboard's HTML page."""
        return _file_response("index.html", "text/html; charset=utf-8")

    @router.get(path + "/assets/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        """One of the dashboard's files, by its name in a fixed list (404 otherwise)."""
        media_type = _ASSET_TYPES.get(name)
        if media_type is None:
            return error_response(404, "Not Found")
        return _file_response(name, media_type)


__all__ = ["CONTENT_SECURITY_POLICY", "add_dashboard_routes"]

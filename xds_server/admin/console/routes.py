"""``/ui/``: the console's pages and static assets (outside the OpenAPI document).

The pages and assets hold no data, so the authentication middleware lets them through; the
data comes from the API, with the token, through the browser. Every answer carries a strict
Content-Security-Policy (same origin only) so that nothing can load from elsewhere.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any, Final

from fastapi import APIRouter
from starlette.responses import HTMLResponse, RedirectResponse, Response

from xds_server.admin.console.pages import (
    CONTENT_SECURITY_POLICY,
    PAGES,
    PAGES_BY_SLUG,
    render_page,
)
from xds_server.admin.problem import ApiError
from xds_server.model import KINDS

CONSOLE_PREFIX: Final = "/ui"
_MEDIA_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@cache
def _assets() -> dict[str, bytes]:
    """Every file of ``static/``, read once (they ship in the package)."""
    folder = resources.files("xds_server.admin.console") / "static"
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


@cache
def asset_version() -> str:
    digest = hashlib.sha256()
    for name, data in sorted(_assets().items()):
        digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()[:12]


def page_data() -> dict[str, Any]:
    """What every page's script may need: the kinds, their collections and summaries."""
    kinds = [
        {
            "kind": info.kind.value,
            "path": info.path,
            "singleton": info.singleton is not None,
            "summary": info.summary,
        }
        for info in KINDS
    ]
    return {"kinds": kinds}


def console_router() -> APIRouter:
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)

    @router.get("")
    async def console_root() -> Response:
        return RedirectResponse(f"{CONSOLE_PREFIX}/{PAGES[0].slug}", headers=_HEADERS)

    @router.get("/")
    async def console_home() -> Response:
        return RedirectResponse(f"{CONSOLE_PREFIX}/{PAGES[0].slug}", headers=_HEADERS)

    @router.get("/static/{name}")
    async def console_asset(name: str) -> Response:
        data = _assets().get(name)
        suffix = name[name.rfind(".") :] if "." in name else ""
        if data is None or suffix not in _MEDIA_TYPES:
            raise ApiError(404, "not-found", f"the console has no asset {name!r}")
        headers = {**_HEADERS, "Cache-Control": "public, max-age=3600"}
        return Response(data, media_type=_MEDIA_TYPES[suffix], headers=headers)

    @router.get("/{slug}")
    async def console_page(slug: str) -> Response:
        page = PAGES_BY_SLUG.get(slug)
        if page is None:
            raise ApiError(404, "not-found", f"the console has no page {slug!r}")
        headers = {**_HEADERS, "Cache-Control": "no-cache"}
        return HTMLResponse(render_page(page, asset_version(), page_data()), headers=headers)

    return router

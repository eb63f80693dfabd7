"""The web app's files (``web/``, built into ``web/dist`` by ``make``), served at ``/``.

Not part of the API: the page reads only the public routes of the OpenAPI document,
like any other client. This module serves files and nothing else:

- the page paths (``/``, ``/live/{session}``, ``/wallet``, ``/explorer/...``, and GS1
  Digital Link's ``/01/{gtin}/21/{serial}``, the path a code on a package points to)
  answer ``index.html``, revalidated on every load (``Cache-Control: no-cache``), so a
  new build is picked up at once;
- ``/assets/{name}`` answers the build's content-hashed files, cached for a year
  (``immutable``: a new build has new names).

Files are read once, at start-up, from a listing of the build directory: a request
names a key of that table, never a path, so nothing outside it can be reached
(``..``, encoded slashes and absolute paths are simply unknown names). Without a
build, the pages say how to make one.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from core import HttpError

WEB_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"
# What the page may load and where it may connect: its own origin only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Plain templates (the page checks its own parameters): each is its own canonical form.
PAGE_PATHS = (
    "/",
    "/wallet",
    "/trust",
    "/explorer",
    "/explorer/blocks/{height}",
    "/explorer/txs/{hash}",
    "/explorer/accounts/{address}",
    "/live/{session}",
    "/01/{gtin}/21/{serial}",
)
ASSET_PATH = "/assets/{name}"
NOT_BUILT = (
    "<!doctype html><meta charset=utf-8><title>LiveLedger</title>"
    "<p>The web app is not built: run <code>make web</code> (or <code>make devnet</code>), "
    "then reload. The HTTP API is at <a href=/v1/openapi.json>/v1/openapi.json</a>.</p>"
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class WebFiles:
    index: bytes | None
    assets: dict[str, Asset]


def load_files(dist: Path = WEB_DIST) -> WebFiles:
    """The build's index page and assets (regular files directly in ``assets/``)."""
    index_path = dist / "index.html"
    index = index_path.read_bytes() if index_path.is_file() else None
    assets: dict[str, Asset] = {}
    folder = dist / "assets"
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind == "application/javascript":
                    kind += "; charset=utf-8"
                assets[path.name] = Asset(path.read_bytes(), kind)
    return WebFiles(index, assets)


FILES: web.AppKey[WebFiles] = web.AppKey("web_files", WebFiles)


async def page(request: web.Request) -> web.Response:
    """The app's one HTML page, for every page path (the app routes in the browser)."""
    index = request.app[FILES].index
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    if index is None:
        return web.Response(text=NOT_BUILT, content_type="text/html", headers=headers)
    return web.Response(body=index, content_type="text/html", charset="utf-8", headers=headers)


async def asset(request: web.Request) -> web.Response:
    """A built file by its exact name (content-hashed: cached for good)."""
    found = request.app[FILES].assets.get(request.match_info["name"])
    if found is None:
        raise HttpError(404, "not_found", "no such file")
    headers = {
        **SECURITY_HEADERS,
        "Cache-Control": "public, max-age=31536000, immutable",
        "Content-Type": found.content_type,
    }
    return web.Response(body=found.body, headers=headers)


def add_web_routes(app: web.Application, dist: Path = WEB_DIST) -> None:
    """Serve the web app from ``dist`` (read now) on ``app``."""
    app[FILES] = load_files(dist)
    for path in PAGE_PATHS:
        app.router.add_get(path, page)
    app.router.add_get(ASSET_PATH, asset)


# (method, path) of every route this module mounts: the app's files, not API routes.
WEB_ROUTES = frozenset([*(("GET", p) for p in PAGE_PATHS), ("GET", ASSET_PATH)])

"""The page to try the models (service/static/: plain HTML, JS and CSS, nothing fetched from elsewhere), at
``/``, where BentoML puts its API UI; that UI moves to ``/docs``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .access import record_refusal
from .bentoml_compat import apis
from .contract import Rejection

STATIC = Path(__file__).resolve().parent / "static"
# Everything the page uses comes from this server: a page that needs the network elsewhere fails here first.
_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

# The page and its script must come from the same release: a browser that reused a cached app.js after an
# upgrade would speak the old protocol to the new service. "no-cache" lets it keep a copy but ask first; the
# ETag and Last-Modified starlette sends make that question a 304 when nothing changed.
_REVALIDATE = {"Cache-Control": "no-cache"}


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": _POLICY, **_REVALIDATE})


class _Static(StaticFiles):
    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_REVALIDATE)
        return response


# BentoML's API UI page embeds Google Tag Manager: a page of this service would tell a third party that it was
# opened, from where, by whom. Its snippet is cut out, and the policy keeps anything else it fetches on this
# server (Swagger UI's inline styles and data: images are its own).
_DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-src 'none'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_TRACKER = re.compile(r"<!-- Google Tag Manager.*?<!-- End Google Tag Manager[^>]*-->", re.DOTALL)


async def _docs(request: Request) -> Response:
    page = apis.openapi_ui_page()
    if page is None:
        refused = Rejection("no_such_path", "BentoML's API UI is not available here; the document is at /docs.json")
        record_refusal(refused, request.method, request.url.path)
        return JSONResponse(refused.body(), status_code=refused.status, headers=refused.headers)
    html = _TRACKER.sub("", page.read_text(encoding="utf-8"))
    return HTMLResponse(html, headers={"Content-Security-Policy": _DOCS_POLICY})


def page_routes() -> list[BaseRoute]:
    return [
        Route("/", _index, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"]),
        Mount("/static", _Static(directory=STATIC), name="page_static"),
    ]

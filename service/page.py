"""The page to try the models (service/static/: plain HTML, JS and CSS, nothing fetched from elsewhere), at
``/``, where BentoML puts its API UI; that UI moves to ``/docs``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import bentoml_compat

STATIC = Path(__file__).resolve().parent / "static"
# Everything the page uses comes from this server: a page that needs the network elsewhere fails here first.
_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": _POLICY})


async def _docs(request: Request) -> Response:
    page = bentoml_compat.openapi_ui_page()
    if page is None:
        return JSONResponse({"error": "BentoML's API UI is not available; the document is at /docs.json"}, 404)
    return FileResponse(page)


def page_routes() -> list[BaseRoute]:
    return [
        Route("/", _index, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="page_static"),
    ]

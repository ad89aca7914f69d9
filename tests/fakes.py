"""A fake classification service for the scorer's --url tests: the real service's GET /readyz, GET /models and
POST /classify, on a free port of this process, that each test file subclasses to answer its POSTs its own way."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from service.score.remote import KEY_CHECK_NAME

CLASSES = ["alpha", "beta", "gamma"]


def models_listing(classes: list[str]) -> dict:
    """GET /models of a service serving one model, ``fake``, of ``classes``."""
    return {
        "default": "fake",
        "models": [
            {
                "name": "fake",
                "dataset": "folder",
                "arch": "resnet9",
                "classes": classes,
                "precision": "fp32",
                "accuracy": None,
                "input_size": [32, 32],
                "fit": "center_crop",
                "default": True,
            }
        ],
    }


MODELS = models_listing(CLASSES)


def models_listing_of(names: list[str], classes: list[str], default: str = "fake") -> dict:
    """GET /models of a service serving the models ``names``, each as ``models_listing``'s of ``classes``, with
    ``default`` its default."""
    (model,) = models_listing(classes)["models"]
    return {"default": default, "models": [{**model, "name": name, "default": name == default} for name in names]}


class FakeService(BaseHTTPRequestHandler):
    """GET /readyz (ready) and GET /models (one model of ``classes``); ``classify`` answers a POST /classify of
    these images with the same classes for every one. Subclasses write ``do_POST``."""

    protocol_version = "HTTP/1.1"
    classes = CLASSES

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: bytes | dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/html")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.answer(200, {"status": "ready"} if self.path == "/readyz" else models_listing(self.classes))

    def read_images(self) -> tuple[bytes, list[str]]:
        """The POST's body and the file names of its images, in the order sent."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return body, [n.decode() for n in re.findall(rb'name="images"; filename="([^"]*)"', body)]

    def classify(self, names: list[str]) -> None:
        top = [{"label": c, "index": i, "confidence": 0.5 / (i + 1)} for i, c in enumerate(self.classes)]
        self.answer(200, {"model": "fake", "predictions": [{"filename": n, "top_k": top} for n in names]})


class HoldingService(FakeService):
    """Answers the request of the run's first chunk (the one holding 0.png) at once, and holds the others until
    ``server.release`` (``server.held_s`` seconds at most), setting ``server.holding``. ``server.fails_on``, a file
    name (None for none): the request holding it is answered only once another is held, and by another model than
    the run's, which stops the run."""

    def do_POST(self) -> None:
        server = self.server
        _, names = self.read_images()
        if server.fails_on in names:  # type: ignore[attr-defined]
            server.holding.wait(server.held_s)  # type: ignore[attr-defined]
            top = [{"label": "alpha", "index": 0, "confidence": 0.9}]
            self.answer(200, {"model": "other", "predictions": [{"filename": n, "top_k": top} for n in names]})
            return
        if names != [KEY_CHECK_NAME] and "0.png" not in names:
            server.holding.set()  # type: ignore[attr-defined]
            server.release.wait(server.held_s)  # type: ignore[attr-defined]
        try:
            self.classify(names)
        except OSError:  # the scorer abandoned it
            pass


@contextmanager
def serving(handler: type[FakeService], **state: Any) -> Iterator[ThreadingHTTPServer]:
    """``handler`` serving on a free port of 127.0.0.1, the server holding ``state`` as attributes and a
    ``release`` event that a handler holding a request waits on: set on the way out, so that none outlives it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.release = threading.Event()  # type: ignore[attr-defined]
    for name, value in state.items():
        setattr(server, name, value)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


class AsgiClient:
    """The ASGI receive of a request whose body has arrived whole: its next message is the disconnect, once
    ``leave`` is called."""

    def __init__(self, body: bytes = b"") -> None:
        self.body: bytes | None = body
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        self.gone.set()
